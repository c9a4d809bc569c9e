//! Number and text formatting shared by the console and CSV reports.

/// A response time for the console: whole milliseconds from 100 ms up, otherwise up to two
/// decimals without trailing zeros (`0.21`, `12.5`, `3`).
pub(crate) fn console_ms(ms: f64) -> String {
    if ms >= 100.0 {
        format!("{ms:.0}")
    } else {
        trim_decimals(format!("{ms:.2}"))
    }
}

/// A float as Python's `str` writes it, which is what Locust's CSV files hold: the shortest
/// text that reads back as the same value, always with a decimal point (`12.0`, `0.213`,
/// `1234.5`). Python switches to exponents below 1e-4 and from 1e16 up (`5e-05`); this keeps
/// plain decimals there, which every CSV reader parses as the same float.
pub(crate) fn python_float(value: f64) -> String {
    if !value.is_finite() {
        // Python writes `nan` / `inf`; no statistic here is ever one, but stay readable.
        return if value.is_nan() {
            "nan".to_owned()
        } else if value > 0.0 {
            "inf".to_owned()
        } else {
            "-inf".to_owned()
        };
    }
    let mut text = format!("{value}");
    if !text.contains('.') {
        text.push_str(".0");
    }
    text
}

/// A Unix second as Locust writes timestamps into its failures CSV (`format_utc_timestamp`):
/// `2024-03-09T14:05:00Z`.
pub(crate) fn utc_timestamp(unix_secs: u64) -> String {
    let days = unix_secs / 86_400;
    let of_day = unix_secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        of_day / 3_600,
        of_day % 3_600 / 60,
        of_day % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's
/// `civil_from_days`, for non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let shifted = days + 719_468;
    let era = shifted / 146_097;
    let day_of_era = shifted % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

fn trim_decimals(mut text: String) -> String {
    if text.contains('.') {
        while text.ends_with('0') {
            text.pop();
        }
        if text.ends_with('.') {
            text.pop();
        }
    }
    text
}

/// Locust's column label of a quantile: `50%`, `99.9%`, `100%`.
pub(crate) fn percent_label(quantile: f64) -> String {
    let percent = quantile * 100.0;
    let rounded = (percent * 1e6).round() / 1e6;
    format!("{rounded}%")
}

/// `text` shortened to `width` characters by cutting its middle (the start and the end of a
/// URL are the informative parts), marked with `…`.
pub(crate) fn fit(text: &str, width: usize) -> String {
    let length = text.chars().count();
    if length <= width {
        return text.to_owned();
    }
    if width == 0 {
        return String::new();
    }
    let kept = width - 1;
    let head = kept.div_ceil(2);
    let tail = kept - head;
    let mut fitted: String = text.chars().take(head).collect();
    fitted.push('…');
    fitted.extend(text.chars().skip(length - tail));
    fitted
}

/// `text` left-aligned in `width` characters (counting characters, not bytes).
pub(crate) fn pad(text: &str, width: usize) -> String {
    let length = text.chars().count();
    let mut padded = text.to_owned();
    padded.extend(std::iter::repeat_n(' ', width.saturating_sub(length)));
    padded
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PERCENTILES;

    #[test]
    fn console_response_times() {
        assert_eq!(console_ms(0.213), "0.21");
        assert_eq!(console_ms(12.5), "12.5");
        assert_eq!(console_ms(3.0), "3");
        assert_eq!(console_ms(99.999), "100");
        assert_eq!(console_ms(100.4), "100");
        assert_eq!(console_ms(1234.6), "1235");
        assert_eq!(console_ms(0.0), "0");
    }

    #[test]
    fn floats_read_like_python() {
        assert_eq!(python_float(12.0), "12.0");
        assert_eq!(python_float(0.0), "0.0");
        assert_eq!(python_float(0.213), "0.213");
        assert_eq!(python_float(1.0 / 3.0), "0.3333333333333333");
        assert_eq!(python_float(1234.5), "1234.5");
        assert_eq!(python_float(1e20), "100000000000000000000.0");
        assert_eq!(python_float(f64::NAN), "nan");
    }

    #[test]
    fn utc_timestamps_match_python() {
        // datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_timestamp(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_timestamp(1_709_993_100), "2024-03-09T14:05:00Z");
        assert_eq!(utc_timestamp(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn percent_labels_match_locust() {
        let labels: Vec<String> = PERCENTILES.iter().map(|&q| percent_label(q)).collect();
        assert_eq!(
            labels,
            [
                "50%", "66%", "75%", "80%", "90%", "95%", "98%", "99%", "99.9%", "99.99%", "100%"
            ]
        );
    }

    #[test]
    fn fitting_cuts_the_middle() {
        assert_eq!(fit("/short", 10), "/short");
        assert_eq!(fit("/api/v1/items/[id]/reviews", 11), "/api/…views");
        assert_eq!(fit("/api/v1/items/[id]/reviews", 11).chars().count(), 11);
        assert_eq!(fit("ééééé", 3), "é…é");
        assert_eq!(pad("é", 3), "é  ");
    }
}
