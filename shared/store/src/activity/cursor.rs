//! A listing's cursor: its snapshot and its place, as the ChatKit `after`
//! the client sends back verbatim.

use super::RETENTION_SECS;

/// The oldest snapshot a cursor may carry (an hour less than the retention,
/// for clock skew): older cursors go on with a new snapshot.
pub const MAX_LISTING_AGE_MS: u64 = (RETENTION_SECS - 3_600) * 1_000;
/// How far ahead of this clock a snapshot may be (another instance's clock).
pub const MAX_SKEW_MS: u64 = 60_000;

/// Where a listing is: its snapshot and the entry of the last thread it
/// showed. Written as `<snapshot>-<time>-<thread id>` (times in base 36),
/// so it passes as a ChatKit `after` (1–64 of `[A-Za-z0-9_-]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cursor {
    /// The listing's time `T`, ms.
    pub snapshot: u64,
    /// The last shown thread's entry time, ms.
    pub at: u64,
    /// The last shown thread.
    pub thread: String,
}

/// `v` in base 36, lower case.
fn base36(mut v: u64) -> String {
    let mut digits = Vec::new();
    loop {
        let digit = u32::try_from(v % 36).unwrap_or(0);
        digits.push(char::from_digit(digit, 36).unwrap_or('0'));
        v /= 36;
        if v == 0 {
            break;
        }
    }
    digits.iter().rev().collect()
}

impl Cursor {
    /// The cursor as the client sends it back.
    pub fn encode(&self) -> String {
        format!(
            "{}-{}-{}",
            base36(self.snapshot),
            base36(self.at),
            self.thread
        )
    }

    /// A cursor written by [`Cursor::encode`]; `None` for anything else
    /// (such as a thread id, the cursor before the index).
    pub fn decode(after: &str) -> Option<Self> {
        let mut parts = after.splitn(3, '-');
        let mut time = || {
            parts
                .next()
                .filter(|p| (1..=12).contains(&p.len()))
                .and_then(|p| u64::from_str_radix(p, 36).ok())
        };
        let (snapshot, at) = (time()?, time()?);
        let thread = parts.next().filter(|t| !t.is_empty())?.to_owned();
        Some(Self {
            snapshot,
            at,
            thread,
        })
    }

    /// Whether its snapshot can still be read exactly at `now`: not older
    /// than [`MAX_LISTING_AGE_MS`], nor ahead of `now` by more than clocks
    /// differ, and its place within it (else it was not made by a listing).
    pub fn is_current(&self, now: u64) -> bool {
        self.snapshot <= now.saturating_add(MAX_SKEW_MS)
            && now.saturating_sub(self.snapshot) <= MAX_LISTING_AGE_MS
            && self.at <= self.snapshot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor(snapshot: u64, at: u64, thread: &str) -> Cursor {
        Cursor {
            snapshot,
            at,
            thread: thread.into(),
        }
    }

    #[test]
    fn a_cursor_reads_back_as_itself() {
        for c in [
            cursor(
                1_772_877_600_000,
                1_772_877_599_123,
                "thr_01kb0000000000000000000000",
            ),
            cursor(0, 0, "t"),
            cursor(4_102_444_800_000, 1, "thr_with-dash_and_more"),
        ] {
            assert_eq!(Cursor::decode(&c.encode()), Some(c));
        }
    }

    #[test]
    fn a_cursor_is_a_valid_chatkit_after_for_our_thread_ids() {
        let c = cursor(
            4_102_444_800_000,
            4_102_444_800_000,
            "thr_01kb0000000000000000000000",
        );
        let text = c.encode();
        assert!(text.len() <= 64, "{text}");
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
    }

    #[test]
    fn anything_else_is_no_cursor() {
        for after in [
            "thr_01kb0000000000000000000000",
            "",
            "abc",
            "1-2",
            "1-2-",
            "-2-thr_1",
            "1--thr_1",
            "1_-2-thr_1",
            "zzzzzzzzzzzzz-1-thr_1",
        ] {
            assert_eq!(Cursor::decode(after), None, "{after}");
        }
    }

    #[test]
    fn a_cursor_is_current_for_a_day_less_an_hour_and_a_minute_ahead_at_most() {
        let now = 10 * MAX_LISTING_AGE_MS;
        assert!(cursor(now, 0, "t").is_current(now));
        assert!(cursor(now - MAX_LISTING_AGE_MS, 0, "t").is_current(now));
        assert!(!cursor(now - MAX_LISTING_AGE_MS - 1, 0, "t").is_current(now));
        assert!(cursor(now + MAX_SKEW_MS, 0, "t").is_current(now));
        assert!(!cursor(now + MAX_SKEW_MS + 1, 0, "t").is_current(now));
        assert_eq!(MAX_LISTING_AGE_MS, 23 * 3_600 * 1_000);
    }

    #[test]
    fn a_cursor_placed_after_its_snapshot_is_no_listings() {
        assert!(cursor(1_000, 1_000, "t").is_current(1_000));
        assert!(!cursor(1_000, 1_001, "t").is_current(1_000));
    }
}
