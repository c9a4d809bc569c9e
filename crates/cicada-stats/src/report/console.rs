//! Text tables in the layout of Locust's console output: the periodic request table, the
//! "Response time percentiles (approximated)" table, the "Error report" and a table of user
//! errors.
//!
//! ```
//! use cicada_stats::report::console;
//! use cicada_stats::StatsSnapshot;
//!
//! let table = console::stats_table(&StatsSnapshot::default());
//! assert!(table.starts_with("Type     Name"));
//! assert!(table.lines().last().unwrap().contains("Aggregated"));
//! ```

use std::fmt::Write as _;

use super::format::{console_ms, fit, pad, percent_label};
use crate::PERCENTILES;
use crate::snapshot::{EntryStats, StatsSnapshot};

/// Width of the "Type" column (Locust's `STATS_TYPE_WIDTH`).
const TYPE_WIDTH: usize = 8;

/// Which rates the request table shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Rates {
    /// Over the current window: Locust's periodic table while the test runs.
    #[default]
    Current,
    /// Over the whole run: Locust's final summary.
    Total,
}

/// Layout options of the tables.
///
/// ```
/// use cicada_stats::report::console::{Rates, TableOptions};
///
/// let options = TableOptions { name_width: 40, rates: Rates::Total };
/// assert_eq!(TableOptions::default().name_width, 80);
/// # let _ = options;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableOptions {
    /// Room for "Type" and "Name" together, as Locust's `STATS_NAME_WIDTH` (80 when the
    /// output is not a terminal; Locust uses the terminal width minus 80, at most 80). Names
    /// longer than their column are shortened in the middle.
    pub name_width: usize,
    /// Current or whole-run rates in the request table.
    pub rates: Rates,
}

impl Default for TableOptions {
    fn default() -> Self {
        TableOptions {
            name_width: 80,
            rates: Rates::Current,
        }
    }
}

impl TableOptions {
    /// Options for a terminal `columns` wide, sized like Locust does.
    ///
    /// ```
    /// use cicada_stats::report::console::TableOptions;
    ///
    /// assert_eq!(TableOptions::for_terminal(120).name_width, 40);
    /// assert_eq!(TableOptions::for_terminal(300).name_width, 80);
    /// ```
    pub fn for_terminal(columns: usize) -> Self {
        TableOptions {
            name_width: columns.saturating_sub(80).min(80),
            ..TableOptions::default()
        }
    }

    /// Width of the name column of the request table (Locust gives it 4 extra characters
    /// saved by its compact columns).
    fn request_name_width(&self) -> usize {
        self.name_width.saturating_sub(TYPE_WIDTH) + 4
    }
}

/// The request table with current rates, as Locust prints every few seconds.
///
/// ```
/// use cicada_stats::report::console;
/// use cicada_stats::{EntryStats, StatsSnapshot};
///
/// let mut snapshot = StatsSnapshot::default();
/// snapshot.entries.push(EntryStats {
///     method: "GET".into(),
///     name: "/".into(),
///     num_requests: 10,
///     avg_ms: 0.4,
///     ..EntryStats::default()
/// });
/// let table = console::stats_table(&snapshot);
/// assert!(table.lines().nth(2).unwrap().starts_with("GET      /"));
/// ```
pub fn stats_table(snapshot: &StatsSnapshot) -> String {
    stats_table_with(snapshot, &TableOptions::default())
}

/// The request table with the given layout and rates.
///
/// ```
/// use cicada_stats::report::console::{self, Rates, TableOptions};
/// use cicada_stats::StatsSnapshot;
///
/// let options = TableOptions { rates: Rates::Total, ..TableOptions::default() };
/// assert!(console::stats_table_with(&StatsSnapshot::default(), &options).contains("req/s"));
/// ```
pub fn stats_table_with(snapshot: &StatsSnapshot, options: &TableOptions) -> String {
    let name_width = options.request_name_width();
    let mut table = String::new();
    let _ = writeln!(
        table,
        "{} {} {:>7} {:>12} |{:>7} {:>7} {:>7}{:>7} | {:>7} {:>11}",
        pad("Type", TYPE_WIDTH),
        pad("Name", name_width),
        "# reqs",
        "# fails",
        "Avg",
        "Min",
        "Max",
        "Med",
        "req/s",
        "failures/s"
    );
    let separator = format!(
        "{}|{}|{}|{}|{}|{}|{}|{}|{}|{}",
        "-".repeat(TYPE_WIDTH),
        "-".repeat(name_width),
        "-".repeat(7),
        "-".repeat(13),
        "-".repeat(7),
        "-".repeat(7),
        "-".repeat(7),
        "-".repeat(7),
        "-".repeat(8),
        "-".repeat(11)
    );
    let _ = writeln!(table, "{separator}");
    for entry in &snapshot.entries {
        let _ = writeln!(table, "{}", request_row(entry, name_width, options.rates));
    }
    let _ = writeln!(table, "{separator}");
    let _ = writeln!(
        table,
        "{}",
        request_row(&snapshot.total, name_width, options.rates)
    );
    table
}

fn method_cell(method: &str) -> String {
    pad(&fit(method, TYPE_WIDTH), TYPE_WIDTH)
}

fn request_row(entry: &EntryStats, name_width: usize, rates: Rates) -> String {
    let (rps, fail_per_s) = match rates {
        Rates::Current => (entry.current_rps, entry.current_fail_per_s),
        Rates::Total => (entry.total_rps, entry.total_fail_per_s),
    };
    let fails = format!("{}({:.2}%)", entry.num_failures, entry.fail_ratio() * 100.0);
    format!(
        "{} {} {:>7} {:>12} |{:>7} {:>7} {:>7}{:>7} | {:>7.2} {:>11.2}",
        method_cell(&entry.method),
        pad(&fit(&entry.name, name_width), name_width),
        entry.num_requests,
        fails,
        console_ms(entry.avg_ms),
        console_ms(entry.min_ms),
        console_ms(entry.max_ms),
        console_ms(entry.median_ms),
        rps,
        fail_per_s
    )
}

/// The whole-run percentile table ("Response time percentiles (approximated)"), with the
/// columns of [`PERCENTILES`] and "# reqs". Entries without requests are left out.
///
/// ```
/// use cicada_stats::report::console;
/// use cicada_stats::StatsSnapshot;
///
/// let table = console::percentiles_table(&StatsSnapshot::default());
/// assert!(table.starts_with("Response time percentiles (approximated)"));
/// assert!(table.contains("99.99%"));
/// ```
pub fn percentiles_table(snapshot: &StatsSnapshot) -> String {
    percentiles_table_with(snapshot, &TableOptions::default())
}

/// [`percentiles_table`] with the given layout.
pub fn percentiles_table_with(snapshot: &StatsSnapshot, options: &TableOptions) -> String {
    let name_width = options.name_width;
    let mut table = String::from("Response time percentiles (approximated)\n");
    let mut header = format!("{} {}", pad("Type", TYPE_WIDTH), pad("Name", name_width));
    for (column, quantile) in PERCENTILES.iter().enumerate() {
        let width = percentile_column_width(column);
        let _ = write!(header, " {:>width$}", percent_label(*quantile));
    }
    let _ = write!(header, " {:>6}", "# reqs");
    let _ = writeln!(table, "{header}");
    let mut separator = format!("{}|{}", "-".repeat(TYPE_WIDTH), "-".repeat(name_width));
    for column in 0..=PERCENTILES.len() {
        let _ = write!(
            separator,
            "|{}",
            "-".repeat(percentile_column_width(column))
        );
    }
    let _ = writeln!(table, "{separator}");
    for entry in snapshot
        .entries
        .iter()
        .filter(|entry| entry.num_requests > 0)
    {
        let _ = writeln!(table, "{}", percentile_row(entry, name_width));
    }
    let _ = writeln!(table, "{separator}");
    if snapshot.total.num_requests > 0 {
        let _ = writeln!(table, "{}", percentile_row(&snapshot.total, name_width));
    }
    table
}

/// Locust's layout: the first percentile column is 8 wide, the others (and "# reqs") 6.
fn percentile_column_width(column: usize) -> usize {
    if column == 0 { 8 } else { 6 }
}

fn percentile_row(entry: &EntryStats, name_width: usize) -> String {
    let mut row = format!(
        "{} {}",
        method_cell(&entry.method),
        pad(&fit(&entry.name, name_width), name_width)
    );
    for (column, quantile) in PERCENTILES.iter().enumerate() {
        let width = percentile_column_width(column);
        let value = entry.percentile(*quantile).unwrap_or(0.0);
        let _ = write!(row, " {:>width$}", console_ms(value));
    }
    let _ = write!(row, " {:>6}", entry.num_requests);
    row
}

/// The "Error report": one line per failure group, `# occurrences` then
/// `METHOD name: error`. Empty when there are no failures (Locust prints nothing then).
///
/// ```
/// use cicada_stats::report::console;
/// use cicada_stats::{FailureStats, StatsSnapshot};
///
/// let mut snapshot = StatsSnapshot::default();
/// assert_eq!(console::failures_table(&snapshot), "");
/// snapshot.failures.push(FailureStats {
///     method: "GET".into(),
///     name: "/cart".into(),
///     error: "HTTP 500".into(),
///     occurrences: 3,
///     ..FailureStats::default()
/// });
/// assert!(console::failures_table(&snapshot).contains("GET /cart: HTTP 500"));
/// ```
pub fn failures_table(snapshot: &StatsSnapshot) -> String {
    failures_table_with(snapshot, &TableOptions::default())
}

/// [`failures_table`] with the given layout.
pub fn failures_table_with(snapshot: &StatsSnapshot, options: &TableOptions) -> String {
    if snapshot.failures.is_empty() {
        return String::new();
    }
    let separator = format!(
        "{}|{}",
        "-".repeat(18),
        "-".repeat((80 + options.name_width).saturating_sub(19))
    );
    let mut table = String::from("Error report\n");
    let _ = writeln!(table, "{} Error", pad("# occurrences", 18));
    let _ = writeln!(table, "{separator}");
    for failure in &snapshot.failures {
        let description = if failure.method.is_empty() {
            format!("{}: {}", failure.name, failure.error)
        } else {
            format!("{} {}: {}", failure.method, failure.name, failure.error)
        };
        let _ = writeln!(
            table,
            "{} {}",
            pad(&failure.occurrences.to_string(), 18),
            description
        );
    }
    let _ = writeln!(table, "{separator}");
    table
}

/// User errors (tasks that returned an error or panicked): `# occurrences`, the user type
/// and `message (at location)`. Empty when there are none.
///
/// ```
/// use cicada_stats::report::console;
/// use cicada_stats::Stats;
///
/// let stats = Stats::default();
/// stats.record_user_error("Shopper", "cart is empty", "src/shopper.rs:42");
/// let table = console::user_errors_table(&stats.snapshot());
/// assert!(table.contains("cart is empty (at src/shopper.rs:42)"));
/// ```
pub fn user_errors_table(snapshot: &StatsSnapshot) -> String {
    if snapshot.user_errors.is_empty() {
        return String::new();
    }
    let type_width = snapshot
        .user_errors
        .iter()
        .map(|error| error.user_type.chars().count())
        .max()
        .unwrap_or(0)
        .clamp("User".len(), 24);
    let separator = format!(
        "{}|{}|{}",
        "-".repeat(18),
        "-".repeat(type_width),
        "-".repeat(60)
    );
    let mut table = String::from("User errors\n");
    let _ = writeln!(
        table,
        "{} {} Error",
        pad("# occurrences", 18),
        pad("User", type_width)
    );
    let _ = writeln!(table, "{separator}");
    for error in &snapshot.user_errors {
        let location = if error.traceback.is_empty() {
            String::new()
        } else {
            format!(" (at {})", error.traceback)
        };
        let _ = writeln!(
            table,
            "{} {} {}{}",
            pad(&error.count.to_string(), 18),
            pad(&fit(&error.user_type, type_width), type_width),
            error.message,
            location
        );
    }
    let _ = writeln!(table, "{separator}");
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(method: &str, name: &str, avg_ms: f64) -> EntryStats {
        EntryStats {
            method: method.into(),
            name: name.into(),
            num_requests: 200,
            num_failures: 3,
            min_ms: 0.05,
            max_ms: 250.4,
            avg_ms,
            median_ms: 0.213,
            current_rps: 1234.567,
            current_fail_per_s: 0.5,
            total_rps: 99.0,
            percentiles: PERCENTILES.iter().map(|&q| (q, q * 10.0)).collect(),
            ..EntryStats::default()
        }
    }

    fn snapshot() -> StatsSnapshot {
        StatsSnapshot {
            entries: vec![
                entry("GET", "/", 0.42),
                entry("POST", &format!("/very/long/{}", "x".repeat(120)), 150.7),
            ],
            total: EntryStats {
                name: "Aggregated".into(),
                ..entry("", "", 12.0)
            },
            ..StatsSnapshot::default()
        }
    }

    #[test]
    fn request_rows_line_up_with_the_header() {
        let table = stats_table(&snapshot());
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 6);
        let width = lines[0].chars().count();
        for line in &lines {
            assert_eq!(line.chars().count(), width, "{line}");
        }
        assert!(lines[2].contains("0.42"));
        assert!(lines[2].contains("3(1.50%)"));
        assert!(lines[2].contains("1234.57"));
        assert!(lines[3].contains('…'));
        assert!(lines[3].contains(" 151 "));
        assert!(lines[5].starts_with("         Aggregated"));
    }

    #[test]
    fn total_rates_are_selectable() {
        let options = TableOptions {
            rates: Rates::Total,
            ..TableOptions::default()
        };
        assert!(stats_table_with(&snapshot(), &options).contains("99.00"));
    }

    #[test]
    fn percentile_rows_line_up_with_the_header() {
        let table = percentiles_table(&snapshot());
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 7);
        let width = lines[1].chars().count();
        for line in &lines[1..] {
            assert_eq!(line.chars().count(), width, "{line}");
        }
        assert!(lines[1].contains("  50%") && lines[1].ends_with("# reqs"));
        assert!(lines[3].ends_with(" 200"));
    }

    #[test]
    fn narrow_terminal_still_renders() {
        let options = TableOptions::for_terminal(60);
        assert_eq!(options.name_width, 0);
        let table = stats_table_with(&snapshot(), &options);
        assert_eq!(table.lines().count(), 6);
    }
}
