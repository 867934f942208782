//! Wire-shape tests.

use serde_json::json;

use super::*;

/// A Card using most modelled props.
fn rich_card() -> WidgetRoot {
    let act = ActionConfig::new("task.open")
        .payload(json!({"task_id": "t1"}))
        .handler(Handler::Client)
        .loading_behavior(LoadingBehavior::Container)
        .streaming(false);
    Card::new(vec![
        FlexBox::new(vec![
            Image::new("https://x.test/a.png")
                .alt("a")
                .fit(ImageFit::Cover)
                .radius(Radius::Full)
                .size(40)
                .into(),
        ])
        .direction(Direction::Row)
        .padding(1.5)
        .width("50%")
        .justify(Justify::Between)
        .wrap(Wrap::Wrap)
        .radius(Radius::Pct100)
        .background("surface-secondary")
        .into(),
        Title::new("Today")
            .size(TitleSize::Xl2)
            .weight(Weight::Bold)
            .text_align(TextAlign::Center)
            .into(),
        Text::new("Buy milk")
            .id("t1-text")
            .size(TextSize::Sm)
            .italic(true)
            .truncate(true)
            .max_lines(2)
            .streaming(false)
            .into(),
        Caption::new("Due today")
            .size(CaptionSize::Lg)
            .color("danger")
            .into(),
        Badge::new("high")
            .color(BadgeColor::Danger)
            .variant(BadgeVariant::Outline)
            .size(BadgeSize::Sm)
            .pill(true)
            .into(),
        Markdown::new("**bold**").streaming(true).into(),
        Divider::new().flush(true).color("subtle").size(1).into(),
        Checkbox::new("done_t1")
            .label("Done")
            .default_checked(false)
            .on_change(act.clone())
            .required(true)
            .into(),
        Row::new(vec![
            Icon::new("lucide:calendar").size(IconSize::Xl3).into(),
            Spacer::new().min_size(4).into(),
            Button::new("Open")
                .key("b")
                .on_click(act)
                .icon_start("write")
                .style(ButtonStyle::Primary)
                .color(ButtonColor::Caution)
                .size(ControlSize::Xs3)
                .block(true)
                .disabled(false)
                .into(),
        ])
        .flex(1)
        .margin(2)
        .min_width(100)
        .max_width("600px")
        .height(40)
        .into(),
    ])
    .id("tasks_card")
    .size(CardSize::Full)
    .padding(3)
    .background("surface")
    .collapsed(false)
    .as_form(true)
    .status(Status::new("Tasks").icon("notebook"))
    .theme(Theme::Dark)
    .confirm(CardAction::new("Add task", ActionConfig::new("task.add")))
    .cancel(CardAction::new(
        "Cancel",
        ActionConfig::new("cancel").handler(Handler::Server),
    ))
    .into()
}

fn rich_list() -> WidgetRoot {
    ListView::new(vec![
        ListViewItem::new(vec![Text::new("Write RFC").weight(Weight::Semibold).into()])
            .key("t1")
            .gap(3)
            .align(Align::Center)
            .on_click(ActionConfig::new("task.open")),
    ])
    .limit(5)
    .status(Status::new("Tasks").favicon("https://x.test/f.ico"))
    .theme(Theme::Light)
    .into()
}

#[test]
fn shapes_match_the_sdk_json() {
    let button = Button::new("Done")
        .size(ControlSize::Sm)
        .variant(ControlVariant::Outline)
        .on_click(
            ActionConfig::new("task.complete")
                .payload(json!({"task_id": "t1"}))
                .loading_behavior(LoadingBehavior::Itself),
        );
    assert_eq!(
        serde_json::to_value(WidgetNode::from(button)).unwrap(),
        json!({"type": "Button", "label": "Done", "size": "sm", "variant": "outline",
               "onClickAction": {"type": "task.complete", "payload": {"task_id": "t1"}, "loadingBehavior": "self"}})
    );
    let text = Text::new("x")
        .line_through(true)
        .max_lines(1)
        .text_align(TextAlign::End);
    assert_eq!(
        serde_json::to_value(WidgetNode::from(text)).unwrap(),
        json!({"type": "Text", "value": "x", "lineThrough": true, "maxLines": 1, "textAlign": "end"})
    );
    let check = Checkbox::new("n")
        .default_checked(true)
        .on_change(ActionConfig::new("t").streaming(false));
    assert_eq!(
        serde_json::to_value(WidgetNode::from(check)).unwrap(),
        json!({"type": "Checkbox", "name": "n", "defaultChecked": true, "onChangeAction": {"type": "t", "streaming": false}})
    );
    let boxed = FlexBox::new(vec![Spacer::new().min_size("8px").into()])
        .direction(Direction::Col)
        .padding(1.5);
    assert_eq!(
        serde_json::to_value(WidgetNode::from(boxed)).unwrap(),
        json!({"type": "Box", "direction": "col", "padding": 1.5, "children": [{"type": "Spacer", "minSize": "8px"}]})
    );
    assert_eq!(
        serde_json::to_value(rich_list()).unwrap(),
        json!({"type": "ListView", "limit": 5, "theme": "light",
               "status": {"text": "Tasks", "favicon": "https://x.test/f.ico"},
               "children": [{"type": "ListViewItem", "key": "t1", "gap": 3, "align": "center",
                             "onClickAction": {"type": "task.open"},
                             "children": [{"type": "Text", "value": "Write RFC", "weight": "semibold"}]}]})
    );
    let auto = ListView::new(vec![]).limit(Limit::Auto(Auto::Auto));
    assert_eq!(
        serde_json::to_value(WidgetRoot::from(auto)).unwrap()["limit"],
        "auto"
    );
    let card = serde_json::to_value(rich_card()).unwrap();
    assert_eq!(card["asForm"], true);
    assert_eq!(
        card["confirm"],
        json!({"label": "Add task", "action": {"type": "task.add"}})
    );
    assert_eq!(card["children"][8]["children"][2]["iconStart"], "write");
    assert_eq!(card["children"][8]["children"][2]["size"], "3xs");
    assert_eq!(card["children"][0]["children"][0]["radius"], "full");
}

#[test]
fn round_trips() {
    for root in [rich_card(), rich_list(), Card::new(vec![]).into()] {
        let text = serde_json::to_string(&root).unwrap();
        let back: WidgetRoot = serde_json::from_str(&text).unwrap();
        assert_eq!(back, root);
        assert_eq!(serde_json::to_string(&back).unwrap(), text);
    }
}

#[test]
fn unset_props_are_omitted() {
    let json = |n: WidgetNode| serde_json::to_value(n).unwrap();
    assert_eq!(
        json(Text::new("x").into()),
        json!({"type": "Text", "value": "x"})
    );
    assert_eq!(json(Spacer::new().into()), json!({"type": "Spacer"}));
    assert_eq!(json(Button::default().into()), json!({"type": "Button"}));
    assert_eq!(
        json(Row::new(vec![]).into()),
        json!({"type": "Row", "children": []})
    );
    assert_eq!(
        serde_json::to_value(ActionConfig::new("a")).unwrap(),
        json!({"type": "a"})
    );
    assert_eq!(
        serde_json::to_value(WidgetRoot::from(Card::new(vec![]))).unwrap(),
        json!({"type": "Card", "children": []})
    );
}

#[test]
fn reading_rejects_what_the_sdk_rejects() {
    let bad = [
        json!({"type": "Card", "size": "xl", "children": []}),
        json!({"type": "Card"}),
        json!({"type": "Row", "children": []}),
        json!({"type": "Card", "children": [{"type": "Card", "children": []}]}),
        json!({"type": "Card", "children": [{"type": "Text"}]}),
        json!({"type": "ListView", "children": [{"type": "Text", "value": "x"}]}),
    ];
    for value in bad {
        assert!(
            serde_json::from_value::<WidgetRoot>(value.clone()).is_err(),
            "{value}"
        );
    }
    let row: WidgetNode = serde_json::from_value(json!({"type": "Row"})).unwrap();
    assert_eq!(row, Row::new(vec![]).into());
}

#[test]
fn walk_visits_in_document_order() {
    let mut seen = Vec::new();
    rich_card().walk(&mut |n| {
        seen.push(
            serde_json::to_value(n).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_owned(),
        )
    });
    assert_eq!(
        seen.join(" "),
        "Box Image Title Text Caption Badge Markdown Divider Checkbox Row Icon Spacer Button"
    );
}
