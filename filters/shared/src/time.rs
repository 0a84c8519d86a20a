//! Timestamps: RFC 3339 in config, Unix milliseconds at run time.
//!
//! The host's clock (`proxy_get_current_time_nanoseconds`) is read by the glue and passed to the
//! logic as `now_ms`, so decisions that depend on time are testable.

/// Where a decision reads the time from: a fixed instant (tests, and glue that has read the
/// clock anyway), or [`Lazy`], which asks the host only when the decision needs the time.
pub trait Now {
    fn now_ms(&self) -> u64;
}

impl Now for u64 {
    fn now_ms(&self) -> u64 {
        *self
    }
}

/// The clock read at most once, and only if asked: the host's clock is a host call, and most
/// requests decide without it.
pub struct Lazy<F: Fn() -> u64> {
    read: F,
    at: std::cell::Cell<Option<u64>>,
}

impl<F: Fn() -> u64> Lazy<F> {
    pub fn new(read: F) -> Self {
        Self {
            read,
            at: std::cell::Cell::new(None),
        }
    }
}

impl<F: Fn() -> u64> Now for Lazy<F> {
    fn now_ms(&self) -> u64 {
        match self.at.get() {
            Some(t) => t,
            None => {
                let t = (self.read)();
                self.at.set(Some(t));
                t
            }
        }
    }
}

/// Parses an RFC 3339 timestamp (`2026-12-01T00:00:00Z`, `…T09:30:00.250+02:00`) into Unix ms.
/// Years before 1970 are refused.
pub fn parse_rfc3339_ms(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<u64> {
        let digits = b.get(from..from + len)?;
        digits.iter().try_fold(0u64, |acc, &d| {
            d.is_ascii_digit().then(|| acc * 10 + u64::from(d - b'0'))
        })
    };
    let sep = |at: usize, allowed: &[u8]| b.get(at).is_some_and(|c| allowed.contains(c));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if year < 1970
        || !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut millis = 0u64;
    if sep(i, b".") {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let frac = s.get(start..i)?;
        if frac.is_empty() {
            return None;
        }
        let padded: String = frac.chars().chain("000".chars()).take(3).collect();
        millis = padded.parse().ok()?;
    }
    let offset_secs: i64 = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && sep(i + 3, b":") => {
            let (oh, om) = (num(i + 1, 2)?, num(i + 4, 2)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = (oh * 3600 + om * 60) as i64;
            if *sign == b'+' { o } else { -o }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + (hour * 3600 + minute * 60 + second.min(59)) as i64 - offset_secs;
    u64::try_from(secs)
        .ok()?
        .checked_mul(1000)?
        .checked_add(millis)
}

fn is_leap(y: u64) -> bool {
    (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400)
}

fn days_in_month(y: u64, m: u64) -> u64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: u64, m: u64, d: u64) -> i64 {
    let y = y as i64 - i64::from(m <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lazy_clock_is_read_once_and_only_when_asked() {
        let reads = std::cell::Cell::new(0);
        let clock = Lazy::new(|| {
            reads.set(reads.get() + 1);
            1_000
        });
        assert_eq!(reads.get(), 0);
        assert_eq!((clock.now_ms(), clock.now_ms()), (1_000, 1_000));
        assert_eq!(reads.get(), 1);
        assert_eq!(7u64.now_ms(), 7);
    }
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn known_instants() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2000-03-01T00:00:00Z"),
            Some(951_868_800_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-11-27T21:48:30.5Z"),
            Some(1_795_816_110_500)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-11-27T23:48:30+02:00"),
            parse_rfc3339_ms("2026-11-27T21:48:30Z")
        );
        assert_eq!(
            parse_rfc3339_ms("2024-02-29T12:00:00.123456Z"),
            Some(1_709_208_000_123)
        );
    }

    #[test]
    fn malformed_is_refused() {
        for s in [
            "",
            "2026-11-27",
            "2026-11-27T21:48:30",
            "2026-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-11-27T24:00:00Z",
            "1969-12-31T23:59:59Z",
            "2026-11-27T21:48:30.Z",
            "2026-11-27T21:48:30Zjunk",
            "2026-11-27T21:48:30+0200",
            "２026-11-27T21:48:30Z",
        ] {
            assert_eq!(parse_rfc3339_ms(s), None, "{s}");
        }
    }

    #[cfg(not(target_arch = "wasm32"))]
    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn never_panics(s in ".{0,40}") {
                let _ = parse_rfc3339_ms(&s);
            }

            #[test]
            fn seconds_are_monotonic(a in 0u64..4_000_000_000, b in 0u64..4_000_000_000) {
                let fmt = |t: u64| {
                    // Format via the inverse algorithm to round-trip arbitrary instants.
                    let days = (t / 86_400) as i64;
                    let (y, m, d) = civil_from_days(days);
                    let s = t % 86_400;
                    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", s / 3600, s / 60 % 60, s % 60)
                };
                prop_assert_eq!(parse_rfc3339_ms(&fmt(a)), Some(a * 1000));
                prop_assert_eq!(a < b, parse_rfc3339_ms(&fmt(a)) < parse_rfc3339_ms(&fmt(b)));
            }
        }

        fn civil_from_days(z: i64) -> (i64, i64, i64) {
            let z = z + 719_468;
            let era = z.div_euclid(146_097);
            let doe = z - era * 146_097;
            let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
            let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
            let mp = (5 * doy + 2) / 153;
            let d = doy - (153 * mp + 2) / 5 + 1;
            let m = if mp < 10 { mp + 3 } else { mp - 9 };
            (yoe + era * 400 + i64::from(m <= 2), m, d)
        }
    }
}
