//! Dates for people and feeds, in UTC: the status page's "2006-03-21: 15:30
//! UTC" form, RFC 3339 for Atom and JSON, and the reverse for certificate
//! times. Pure (days-from-civil after Howard Hinnant).

/// Unix seconds now (0 if the clock is before 1970).
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Unix seconds of a UTC date and time.
pub fn unix_of(y: i64, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
    days_from_civil(y, mo, d) * 86_400 + i64::from(h) * 3600 + i64::from(mi) * 60 + i64::from(s)
}

fn parts(unix: i64) -> (i64, u32, u32, i64, i64, i64) {
    let (y, m, d) = civil_from_days(unix.div_euclid(86_400));
    let s = unix.rem_euclid(86_400);
    (y, m, d, s / 3600, s % 3600 / 60, s % 60)
}

/// "2006-03-21"
pub fn date(unix: i64) -> String {
    let (y, m, d, ..) = parts(unix);
    format!("{y:04}-{m:02}-{d:02}")
}

/// "15:30 UTC"
pub fn hm_utc(unix: i64) -> String {
    let (.., h, mi, _) = parts(unix);
    format!("{h:02}:{mi:02} UTC")
}

/// "2006-03-21T15:30:00Z"
pub fn rfc3339(unix: i64) -> String {
    let (y, m, d, h, mi, s) = parts(unix);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_dates() {
        // 2006-03-21: 15:30 UTC, Raid array issues.
        let t = unix_of(2006, 3, 21, 15, 30, 0);
        assert_eq!(t, 1_142_955_000);
        assert_eq!(date(t), "2006-03-21");
        assert_eq!(hm_utc(t), "15:30 UTC");
        assert_eq!(rfc3339(t), "2006-03-21T15:30:00Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(unix_of(2000, 2, 29, 0, 0, 0), 951_782_400);
        for day in [-1000, 0, 11_016, 20_000, 2_932_896] {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
        }
    }
}
