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

/// A response time for CSV: microsecond precision, shortest form (`12`, `0.213`).
pub(crate) fn csv_ms(ms: f64) -> String {
    let rounded = (ms * 1_000.0).round() / 1_000.0;
    // `Display` of f64 prints the shortest text that reads back as the same value, so a value
    // rounded to three decimals prints at most three.
    format!("{rounded}")
}

/// A rate or average for CSV: full precision, like Python's `repr` of a float.
pub(crate) fn csv_float(value: f64) -> String {
    format!("{value}")
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
    fn csv_response_times() {
        assert_eq!(csv_ms(12.0), "12");
        assert_eq!(csv_ms(0.2134), "0.213");
        assert_eq!(csv_ms(1.0 / 3.0), "0.333");
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
