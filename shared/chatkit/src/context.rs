//! Who asks, from where and when (ck-py's request `context`): the verified
//! user, the client's time zone and locale, and the moment the request
//! arrived. The time zone is an IANA name the page sends (`metadata.timezone`
//! in the envelope, or an `X-Timezone` header); the locale is the first
//! language of `Accept-Language`, which ChatKit sends on every request.

use chrono::{DateTime, NaiveDate, Utc};

use taskpilot_domain::UserId;

use crate::zone::Zone;

/// Longest time-zone name accepted (the longest IANA name has 32 characters).
const MAX_ZONE_CHARS: usize = 64;
/// Longest language tag kept (RFC 5646 recommends supporting 35).
const MAX_LOCALE_CHARS: usize = 35;

/// A time-zone name that is not an IANA zone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}: `{value}` is not an IANA time zone (such as Europe/Paris)")]
pub struct InvalidZone {
    /// Where the name came from: `metadata.timezone` or `X-Timezone`.
    pub source_name: &'static str,
    /// The name, cut to 64 characters.
    pub value: String,
}

/// The caller of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    /// The verified user.
    pub user: UserId,
    /// The user's time zone (UTC when the client sends none).
    pub zone: Zone,
    /// The user's language, such as `fr-CA`.
    pub locale: Option<String>,
    /// When the request arrived.
    pub now: DateTime<Utc>,
}

impl Caller {
    /// A caller in UTC with no locale, now.
    pub fn new(user: UserId) -> Self {
        Self {
            user,
            zone: Zone::utc(),
            locale: None,
            now: Utc::now(),
        }
    }

    /// The same caller in `zone`.
    pub fn in_zone(self, zone: Zone) -> Self {
        Self { zone, ..self }
    }

    /// The same caller speaking `locale`.
    pub fn with_locale(self, locale: Option<String>) -> Self {
        Self { locale, ..self }
    }

    /// The same caller at another moment (tests).
    pub fn at(self, now: DateTime<Utc>) -> Self {
        Self { now, ..self }
    }

    /// The client's context: the envelope's time zone, else the header's,
    /// else UTC; the locale from `Accept-Language`.
    pub fn from_client(
        user: UserId,
        envelope_zone: Option<&str>,
        header_zone: Option<&str>,
        accept_language: Option<&str>,
    ) -> Result<Self, InvalidZone> {
        let zone = match (envelope_zone, header_zone) {
            (Some(name), _) => parse_zone(name, "metadata.timezone")?,
            (None, Some(name)) => parse_zone(name, "X-Timezone")?,
            (None, None) => Zone::utc(),
        };
        Ok(Self::new(user)
            .in_zone(zone)
            .with_locale(accept_language.and_then(locale_from)))
    }

    /// Now, on the user's wall clock.
    pub fn local_now(&self) -> DateTime<Zone> {
        self.now.with_timezone(&self.zone)
    }

    /// The user's date today.
    pub fn today(&self) -> NaiveDate {
        self.local_now().date_naive()
    }
}

/// An IANA zone name, spelled as `Intl.DateTimeFormat().resolvedOptions().timeZone` gives it.
/// The name must be spelled exactly as the tz database spells it.
pub fn parse_zone(name: &str, source_name: &'static str) -> Result<Zone, InvalidZone> {
    let name = name.trim();
    let invalid = || InvalidZone {
        source_name,
        value: name.chars().take(MAX_ZONE_CHARS).collect(),
    };
    if name.is_empty() || name.chars().count() > MAX_ZONE_CHARS {
        return Err(invalid());
    }
    Zone::named(name)
        .filter(|zone| zone.name() == name)
        .ok_or_else(invalid)
}

/// The preferred language of an `Accept-Language` header: the highest
/// weight, the first among equals; `*` and malformed tags are skipped.
pub fn locale_from(header: &str) -> Option<String> {
    let mut best: Option<(f32, &str)> = None;
    for entry in header.split(',') {
        let mut parts = entry.split(';');
        let tag = parts.next().unwrap_or("").trim();
        let weight = parts
            .find_map(|p| p.trim().strip_prefix("q="))
            .map_or(Some(1.0), |q| q.trim().parse::<f32>().ok());
        let Some(weight) = weight.filter(|w| (0.0..=1.0).contains(w) && *w > 0.0) else {
            continue;
        };
        if !plausible_tag(tag) {
            continue;
        }
        if best.is_none_or(|(w, _)| weight > w) {
            best = Some((weight, tag));
        }
    }
    best.map(|(_, tag)| tag.to_owned())
}

fn plausible_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= MAX_LOCALE_CHARS
        && tag.split('-').all(|sub| {
            (1..=8).contains(&sub.len()) && sub.chars().all(|c| c.is_ascii_alphanumeric())
        })
        && tag.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> UserId {
        UserId::new("alice").unwrap()
    }

    #[test]
    fn the_envelope_zone_comes_first_then_the_header_then_utc() {
        let both =
            Caller::from_client(alice(), Some("Asia/Tokyo"), Some("Europe/Paris"), None).unwrap();
        assert_eq!(both.zone, Zone::named("Asia/Tokyo").unwrap());
        let header = Caller::from_client(alice(), None, Some("Europe/Paris"), None).unwrap();
        assert_eq!(header.zone, Zone::named("Europe/Paris").unwrap());
        let neither = Caller::from_client(alice(), None, None, None).unwrap();
        assert_eq!(neither.zone, Zone::utc());
    }

    #[test]
    fn zone_names_are_validated() {
        assert_eq!(
            parse_zone(" America/New_York ", "X-Timezone").unwrap(),
            Zone::named("America/New_York").unwrap()
        );
        for bad in [
            "",
            "Mars/Olympus",
            "america/new_york",
            "UTC+3",
            "../etc/passwd",
            &"A".repeat(300),
        ] {
            let e = parse_zone(bad, "X-Timezone").unwrap_err();
            assert!(e.value.chars().count() <= 64);
            assert_eq!(e.source_name, "X-Timezone");
        }
    }

    #[test]
    fn the_locale_is_the_preferred_language() {
        assert_eq!(locale_from("fr-CA"), Some("fr-CA".into()));
        assert_eq!(
            locale_from("en;q=0.5, de-DE;q=0.9, *;q=1"),
            Some("de-DE".into())
        );
        assert_eq!(locale_from("es, en;q=0.8"), Some("es".into()));
        assert_eq!(locale_from("*"), None);
        assert_eq!(locale_from("<script>, en;q=0"), None);
        assert_eq!(locale_from(""), None);
    }

    #[test]
    fn the_first_of_equally_preferred_languages_wins() {
        assert_eq!(locale_from("en-GB, en-US"), Some("en-GB".into()));
        assert_eq!(
            locale_from("de;q=0.7, fr;q=0.7, it;q=0.3"),
            Some("de".into())
        );
    }

    #[test]
    fn only_plain_language_tags_are_taken() {
        let longest = format!("a{}", "-abcdefgh".repeat((MAX_LOCALE_CHARS - 1) / 9));
        assert!(longest.len() <= MAX_LOCALE_CHARS);
        assert_eq!(locale_from(&longest), Some(longest.clone()));
        let too_long = format!("{longest}-abcdefgh");
        assert!(too_long.len() > MAX_LOCALE_CHARS);
        for bad in [too_long.as_str(), "en_US", "1en", "en--US", "abcdefghi"] {
            assert_eq!(locale_from(bad), None, "{bad}");
        }
    }

    #[test]
    fn today_is_the_users_date() {
        let at = "2026-12-03T08:00:00Z".parse().unwrap();
        let honolulu = Caller::new(alice())
            .in_zone(Zone::named("Pacific/Honolulu").unwrap())
            .at(at);
        assert_eq!(honolulu.today().to_string(), "2026-12-02");
        let kiritimati = Caller::new(alice())
            .in_zone(Zone::named("Pacific/Kiritimati").unwrap())
            .at(at);
        assert_eq!(kiritimati.today().to_string(), "2026-12-03");
    }
}
