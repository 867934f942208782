//! Typed ChatKit widgets: the `Card` / `ListView` roots, the components a to-do
//! app uses, and `ActionConfig`, with builders. They serialize to exactly what
//! the ChatKit Python SDK's strict widget models (`openai-chatkit` 1.6.5,
//! `widgets.py` / `actions.py`) accept: the SDK's camelCase prop names, closed
//! value sets as enums, unset props omitted. They deserialize the same JSON, so
//! stored widget items round-trip. Props this module does not model are
//! ignored when reading.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One closed set of string tokens per enum, serialized as the token.
macro_rules! tokens {
    ($($(#[doc = $doc:literal])* $name:ident { $($v:ident = $s:literal),+ $(,)? })*) => {$(
        $(#[doc = $doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name { $(#[doc = concat!("`", $s, "`")] #[serde(rename = $s)] $v,)+ }
    )*};
}

tokens! {
    /// `Card.size`.
    CardSize { Sm = "sm", Md = "md", Lg = "lg", Full = "full" }
    /// `Text.size`.
    TextSize { Xs = "xs", Sm = "sm", Md = "md", Lg = "lg", Xl = "xl" }
    /// `Title.size`.
    TitleSize { Sm = "sm", Md = "md", Lg = "lg", Xl = "xl", Xl2 = "2xl", Xl3 = "3xl", Xl4 = "4xl", Xl5 = "5xl" }
    /// `Caption.size`.
    CaptionSize { Sm = "sm", Md = "md", Lg = "lg" }
    /// `Badge.size`.
    BadgeSize { Sm = "sm", Md = "md", Lg = "lg" }
    /// `Icon.size`.
    IconSize { Xs = "xs", Sm = "sm", Md = "md", Lg = "lg", Xl = "xl", Xl2 = "2xl", Xl3 = "3xl" }
    /// `Button.size` (the SDK's `ControlSize`).
    ControlSize {
        Xs3 = "3xs", Xs2 = "2xs", Xs = "xs", Sm = "sm", Md = "md", Lg = "lg", Xl = "xl", Xl2 = "2xl", Xl3 = "3xl",
    }
    /// Font weight of text nodes.
    Weight { Normal = "normal", Medium = "medium", Semibold = "semibold", Bold = "bold" }
    /// Horizontal text alignment.
    TextAlign { Start = "start", Center = "center", End = "end" }
    /// Cross-axis alignment of a container's children.
    Align { Start = "start", Center = "center", End = "end", Baseline = "baseline", Stretch = "stretch" }
    /// Main-axis distribution of a container's children.
    Justify {
        Start = "start", Center = "center", End = "end", Between = "between", Around = "around",
        Evenly = "evenly", Stretch = "stretch",
    }
    /// Flex wrapping.
    Wrap { NoWrap = "nowrap", Wrap = "wrap", WrapReverse = "wrap-reverse" }
    /// `Box.direction`.
    Direction { Row = "row", Col = "col" }
    /// Corner radius tokens.
    Radius {
        Xs2 = "2xs", Xs = "xs", Sm = "sm", Md = "md", Lg = "lg", Xl = "xl", Xl2 = "2xl", Xl3 = "3xl",
        Xl4 = "4xl", Full = "full", Pct100 = "100%", None = "none",
    }
    /// `Button.variant` (the SDK's `ControlVariant`).
    ControlVariant { Solid = "solid", Soft = "soft", Outline = "outline", Ghost = "ghost" }
    /// `Badge.variant`.
    BadgeVariant { Solid = "solid", Soft = "soft", Outline = "outline" }
    /// `Badge.color`.
    BadgeColor {
        Secondary = "secondary", Success = "success", Danger = "danger", Warning = "warning", Info = "info",
        Discovery = "discovery",
    }
    /// `Button.color`.
    ButtonColor {
        Primary = "primary", Secondary = "secondary", Info = "info", Discovery = "discovery", Success = "success",
        Caution = "caution", Warning = "warning", Danger = "danger",
    }
    /// `Button.style` preset.
    ButtonStyle { Primary = "primary", Secondary = "secondary" }
    /// Forced theme of a root's subtree.
    Theme { Light = "light", Dark = "dark" }
    /// `Image.fit`.
    ImageFit { Cover = "cover", Contain = "contain", Fill = "fill", ScaleDown = "scale-down", None = "none" }
    /// Who handles an action: the server (`threads.custom_action`, the default) or the page.
    Handler { Client = "client", Server = "server" }
    /// What shows a loading state while an action runs (SDK default `auto`).
    LoadingBehavior { Auto = "auto", None = "none", Itself = "self", Container = "container" }
    /// The `"auto"` token of [`Limit`].
    Auto { Auto = "auto" }
}

/// A length: spacing units or px as a number, or a CSS string (`"50%"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Dim {
    /// An integer (spacing units or px, per prop).
    Int(i64),
    /// A fractional number (only where the SDK takes a float).
    Num(f64),
    /// A CSS length.
    Css(String),
}

/// `ListView.limit`: a count, or `"auto"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Limit {
    /// Show at most this many items before "Show more".
    Count(i64),
    /// Let the client decide.
    Auto(Auto),
}

/// An icon name: a built-in (`check-circle-filled`), `lucide:…` or `vendor:…`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IconName(pub String);

/// One-line `From` impls.
macro_rules! from {
    ($($t:ty => $target:ty: |$v:ident| $e:expr;)*) => {$(
        impl From<$t> for $target {
            fn from($v: $t) -> Self {
                $e
            }
        }
    )*};
}

from! {
    i32 => Dim: |v| Self::Int(v.into());
    i64 => Dim: |v| Self::Int(v);
    f64 => Dim: |v| Self::Num(v);
    &str => Dim: |v| Self::Css(v.into());
    i32 => Limit: |v| Self::Count(v.into());
    i64 => Limit: |v| Self::Count(v);
    &str => IconName: |v| Self(v.into());
    String => IconName: |v| Self(v);
}

/// Builder setters for `Option` fields: `fn f(self, v: impl Into<T>) -> Self`.
macro_rules! setters {
    ($name:ident { $($f:ident: $ty:ty),* $(,)? }) => {
        impl $name {$(
            #[doc = concat!("Sets `", stringify!($f), "`.")]
            #[must_use]
            pub fn $f(mut self, v: impl Into<$ty>) -> Self {
                self.$f = Some(v.into());
                self
            }
        )*}
    };
}

/// A props struct (camelCase on the wire): required fields (given to `new`;
/// `[T]` instead means `children: Vec<T>`, attributes allowed before `T`), then
/// optional ones, omitted when unset.
macro_rules! props {
    ($(#[$m:meta])* $name:ident $(($($(#[$rm:meta])* $req:ident: $rty:ty),*))? $([$(#[$cm:meta])* $cty:ty])?
     { $($(#[$fm:meta])* $f:ident: $fty:ty),* $(,)? }) => {
        #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase")]
        $(#[$m])*
        pub struct $name {
            $($(
                #[doc = concat!("The required `", stringify!($req), "`.")]
                $(#[$rm])*
                pub $req: $rty,
            )*)?
            $(/// Child nodes.
            $(#[$cm])*
            pub children: Vec<$cty>,)?
            $(
                #[doc = concat!("The SDK's `", stringify!($f), "` prop (camelCase); `None` is omitted.")]
                $(#[$fm])*
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $f: Option<$fty>,
            )*
        }
        impl $name {
            $(/// With its required props.
            #[allow(clippy::needless_update)]
            pub fn new($($req: impl Into<$rty>),*) -> Self {
                Self { $($req: $req.into(),)* ..Self::default() }
            })?
            $(/// With these children.
            pub fn new(children: Vec<$cty>) -> Self {
                Self { children, ..Self::default() }
            })?
        }
        setters! { $name { $($f: $fty),* } }
    };
}

/// A widget node: `props!` plus the optional `key` and `id` every node has.
macro_rules! widget {
    ($(#[$m:meta])* $name:ident $(($($req:tt)*))? $([$($kids:tt)*])? { $($fields:tt)* }) => {
        props! { $(#[$m])* $name $(($($req)*))? $([$($kids)*])? {
            /// Identity among siblings, kept across re-renders.
            key: String,
            /// Id for targeted updates (e.g. streamed text).
            id: String,
            $($fields)*
        } }
    };
}

/// The layout containers share the SDK's `BoxBase` props.
macro_rules! layout {
    ($($(#[$m:meta])* $name:ident { $($extra:tt)* })*) => {$(
        widget! {
            $(#[$m])*
            $name [#[serde(default)] WidgetNode] {
                align: Align, justify: Justify, wrap: Wrap, flex: Dim, gap: Dim, padding: Dim,
                margin: Dim, width: Dim, height: Dim, min_width: Dim, max_width: Dim,
                radius: Radius, background: String, $($extra)*
            }
        }
    )*};
}

props! {
    /// An action a widget dispatches (`actions.py` `ActionConfig`).
    ActionConfig(
        /// The action type, e.g. `task.complete`.
        #[serde(rename = "type")] kind: String
    ) {
        /// Arbitrary JSON sent back with the action.
        payload: Value,
        /// Who handles it (SDK default: server).
        handler: Handler,
        /// Loading state while it runs (SDK default: auto).
        loading_behavior: LoadingBehavior,
        /// `false` sends it as `threads.sync_custom_action` (SDK default: true).
        streaming: bool,
    }
}
props! {
    /// A status header above a root: text with an icon or a favicon URL.
    Status(text: String) { icon: IconName, favicon: String }
}
props! {
    /// A confirm/cancel button in a Card's footer.
    CardAction(label: String, action: ActionConfig) {}
}

widget! {
    /// The Card root: a container of components.
    Card [WidgetNode] {
        size: CardSize, padding: Dim, background: String, status: Status, collapsed: bool,
        as_form: bool, confirm: CardAction, cancel: CardAction, theme: Theme,
    }
}
widget! {
    /// The ListView root: a list of [`ListViewItem`]s.
    ListView [ListViewItem] { limit: Limit, status: Status, theme: Theme }
}
widget! {
    /// One row of a [`ListView`]. Writes `"type": "ListViewItem"`; reading
    /// accepts any or no `type` (the SDK defaults a missing one).
    #[serde(tag = "type")]
    ListViewItem [WidgetNode] {
        #[serde(rename = "onClickAction")] on_click: ActionConfig, gap: Dim, align: Align,
    }
}
layout! {
    /// Horizontal flex container.
    Row {}
    /// Vertical flex container.
    Col {}
    /// Flex container with a direction (`"Box"` on the wire).
    FlexBox { direction: Direction }
    /// A form: its fields' values are merged into the submit action's
    /// payload, keyed by field name.
    Form {
        #[serde(rename = "onSubmitAction")] on_submit: ActionConfig, direction: Direction,
    }
}
widget! {
    /// Body text.
    Text(value: String) {
        size: TextSize, weight: Weight, color: String, line_through: bool, italic: bool,
        truncate: bool, max_lines: i64, text_align: TextAlign, streaming: bool,
    }
}
widget! {
    /// Headline text.
    Title(value: String) {
        size: TitleSize, weight: Weight, color: String, truncate: bool, max_lines: i64, text_align: TextAlign,
    }
}
widget! {
    /// Secondary small text.
    Caption(value: String) {
        size: CaptionSize, weight: Weight, color: String, truncate: bool, max_lines: i64, text_align: TextAlign,
    }
}
widget! {
    /// A small status label.
    Badge(label: String) { color: BadgeColor, variant: BadgeVariant, size: BadgeSize, pill: bool }
}
widget! {
    /// Markdown text.
    Markdown(value: String) { streaming: bool }
}
widget! {
    /// A button; `new` sets its label.
    Button {
        label: String, #[serde(rename = "onClickAction")] on_click: ActionConfig, submit: bool,
        icon_start: IconName, icon_end: IconName, style: ButtonStyle, color: ButtonColor,
        variant: ControlVariant, size: ControlSize, pill: bool, uniform: bool, block: bool, disabled: bool,
    }
}
widget! {
    /// An icon.
    Icon(name: IconName) { color: String, size: IconSize }
}
widget! {
    /// Flexible space pushing siblings apart.
    Spacer() { min_size: Dim }
}
widget! {
    /// A separator line.
    Divider() { color: String, size: Dim, spacing: Dim, flush: bool }
}
widget! {
    /// A checkbox form control.
    Checkbox(name: String) {
        label: String, default_checked: bool, #[serde(rename = "onChangeAction")] on_change: ActionConfig,
        disabled: bool, required: bool,
    }
}
widget! {
    /// An image.
    Image(src: String) {
        alt: String, fit: ImageFit, radius: Radius, frame: bool, flush: bool, width: Dim, height: Dim, size: Dim,
    }
}

widget! {
    /// A text field of a [`Form`].
    Input(name: String) {
        input_type: String, default_value: String, required: bool, pattern: String,
        placeholder: String, auto_select: bool, auto_focus: bool, disabled: bool,
        variant: String, size: ControlSize, pill: bool,
    }
}
widget! {
    /// A date field (a day picker); `default_value` is an ISO 8601 date-time.
    DatePicker(name: String) {
        #[serde(rename = "onChangeAction")] on_change: ActionConfig, placeholder: String,
        default_value: String, min: String, max: String, variant: ControlVariant,
        size: ControlSize, pill: bool, block: bool, clearable: bool, disabled: bool,
    }
}

impl Button {
    /// A button with this label.
    pub fn new(label: impl Into<String>) -> Self {
        Self::default().label(label)
    }
}

/// Enums of tagged (`"type": "<Name>"`) variants, with `From` each struct.
macro_rules! tagged {
    ($(#[$m:meta])* $enum:ident { $($v:ident($t:ty)),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "type")]
        pub enum $enum { $(#[doc = concat!("A `", stringify!($v), "`.")] $v($t),)* }
        $(impl From<$t> for $enum {
            fn from(w: $t) -> Self {
                Self::$v(w)
            }
        })*
    };
}

/// A top-level widget (what a `widget` thread item carries). Boxed, so the
/// items that hold one stay small.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum WidgetRoot {
    /// A Card.
    Card(Box<Card>),
    /// A ListView.
    ListView(Box<ListView>),
}

/// An empty Card.
impl Default for WidgetRoot {
    fn default() -> Self {
        Card::default().into()
    }
}

from! {
    Card => WidgetRoot: |v| Self::Card(Box::new(v));
    ListView => WidgetRoot: |v| Self::ListView(Box::new(v));
}

tagged! {
    /// A component inside a root.
    WidgetNode {
        Row(Row), Col(Col), Box(FlexBox), Text(Text), Title(Title), Caption(Caption), Badge(Badge),
        Markdown(Markdown), Button(Button), Icon(Icon), Spacer(Spacer), Divider(Divider),
        Checkbox(Checkbox), Image(Image), Form(Form), Input(Input), DatePicker(DatePicker),
    }
}

impl WidgetNode {
    /// The node's children (empty for leaves).
    pub fn children(&self) -> &[WidgetNode] {
        match self {
            Self::Row(n) => &n.children,
            Self::Col(n) => &n.children,
            Self::Box(n) => &n.children,
            Self::Form(n) => &n.children,
            _ => &[],
        }
    }
}

impl WidgetRoot {
    /// Calls `f` on every component (a ListView's items' children), depth-first
    /// in document order.
    pub fn walk<'a>(&'a self, f: &mut impl FnMut(&'a WidgetNode)) {
        fn go<'a>(nodes: &'a [WidgetNode], f: &mut impl FnMut(&'a WidgetNode)) {
            for node in nodes {
                f(node);
                go(node.children(), f);
            }
        }
        match self {
            Self::Card(card) => go(&card.children, f),
            Self::ListView(list) => list.children.iter().for_each(|item| go(&item.children, f)),
        }
    }
}

#[cfg(test)]
mod tests;
