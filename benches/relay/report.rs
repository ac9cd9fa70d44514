//! The report: one table of every run's figures, and the notes under it
//! (problems, and whether the machine disturbed the figures).

use std::collections::{BTreeMap, BTreeSet};

use crate::common::{FilterFigures, percentile};
use crate::measure::RunResult;
use crate::{Ctx, Relay, SUSTAIN_P99_MS};

/// A figure with `digits` decimals, or `—`.
pub(crate) fn fmt_opt(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| "—".to_owned(), |v| format!("{v:.digits$}"))
}

/// `p50 / p99` of sorted figures.
fn p50_p99(sorted: &[f64]) -> String {
    if sorted.is_empty() {
        return "—".to_owned();
    }
    format!(
        "{} / {}",
        fmt_opt(percentile(sorted, 0.5), 2),
        fmt_opt(percentile(sorted, 0.99), 2)
    )
}

enum Row {
    Section(String),
    Cells(String, Vec<String>),
    Wide(String, String),
}

pub(crate) struct Table {
    columns: Vec<String>,
    rows: Vec<Row>,
}

impl Table {
    fn section(&mut self, title: impl Into<String>) {
        self.rows.push(Row::Section(title.into()));
    }

    fn cells(&mut self, label: impl Into<String>, cells: Vec<String>) {
        self.rows.push(Row::Cells(label.into(), cells));
    }

    fn wide(&mut self, label: impl Into<String>, text: impl Into<String>) {
        self.rows.push(Row::Wide(label.into(), text.into()));
    }

    pub(crate) fn print(&self) {
        let label_width = self
            .rows
            .iter()
            .filter_map(|r| match r {
                Row::Cells(label, _) | Row::Wide(label, _) => Some(label.chars().count()),
                Row::Section(_) => None,
            })
            .max()
            .unwrap_or(0)
            + 2;
        let widths: Vec<usize> = (0..self.columns.len())
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| match r {
                        Row::Cells(_, cells) => cells.get(c).map(|s| s.chars().count()),
                        _ => None,
                    })
                    .chain([self.columns[c].chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |label: &str, cells: &[String]| {
            let mut out = format!("{label:<label_width$}");
            for (cell, width) in cells.iter().zip(&widths) {
                out.push_str(&format!("  {cell:>width$}"));
            }
            println!("{}", out.trim_end());
        };
        line("", &self.columns);
        let total = label_width + widths.iter().map(|w| w + 2).sum::<usize>();
        println!("{}", "-".repeat(total));
        for row in &self.rows {
            match row {
                Row::Section(title) => println!("{title}"),
                Row::Cells(label, cells) => line(&format!("  {label}"), cells),
                Row::Wide(label, text) => println!("  {label:<w$}  {text}", w = label_width - 2),
            }
        }
    }
}

impl Ctx {
    /// The table of every run's figures.
    pub(crate) fn table(
        &self,
        relays: &[Relay],
        results: &BTreeMap<(Relay, usize), RunResult>,
        largest: &BTreeMap<Relay, (Option<usize>, bool)>,
        first_audio: &[(usize, Result<Vec<f64>, String>)],
        filter: &Result<FilterFigures, String>,
    ) -> Table {
        let mut table = Table {
            columns: relays.iter().map(|r| r.title().to_owned()).collect(),
            rows: Vec::new(),
        };
        let per = |f: &dyn Fn(&RunResult) -> String, n: usize| -> Vec<String> {
            relays
                .iter()
                .map(|r| results.get(&(*r, n)).map_or_else(|| "—".to_owned(), f))
                .collect()
        };
        // The detailed sections: the comparison N, 1000, the largest step,
        // and each relay's largest sustained N.
        let mut detail: BTreeSet<usize> = BTreeSet::from([self.plan.compare_n]);
        detail.extend(
            self.plan
                .daemon_steps
                .iter()
                .copied()
                .filter(|&n| n == 1000),
        );
        detail.extend(self.plan.daemon_steps.iter().max());
        detail.extend(largest.values().filter_map(|(n, _)| *n));
        for n in detail {
            // Not for the direct baseline alone: its figures are in the search rows.
            if !results.keys().any(|(r, m)| *m == n && *r != Relay::Direct) {
                continue;
            }
            table.section(format!(
                "N = {n} concurrent real-time sessions ({} words each)",
                self.words.len()
            ));
            table.cells(
                "relay CPU, s per audio-hour",
                per(&|r| fmt_opt(r.cpu_per_audio_hour(), 2), n),
            );
            if let Some(reference) = results
                .get(&(Relay::Reference, n))
                .and_then(RunResult::cpu_per_audio_hour)
            {
                table.cells(
                    "  reference proxy's CPU ÷ this relay's",
                    per(
                        &|r| match r.cpu_per_audio_hour() {
                            Some(cpu) if r.relay != Relay::Reference && cpu > 0.0 => {
                                format!("{:.1}×", reference / cpu)
                            }
                            _ => "—".to_owned(),
                        },
                        n,
                    ),
                );
            }
            if let Some(floor) = results
                .get(&(Relay::Floor, n))
                .and_then(RunResult::cpu_per_audio_hour)
                .filter(|&cpu| cpu > 0.0)
            {
                // sttpipe's own cost above the least a relay can do.
                table.cells(
                    "  this relay's CPU ÷ the floor forwarder's",
                    per(
                        &|r| match r.cpu_per_audio_hour() {
                            Some(cpu) if matches!(r.relay, Relay::Unix | Relay::Ws) => {
                                format!("{:.1}×", cpu / floor)
                            }
                            _ => "—".to_owned(),
                        },
                        n,
                    ),
                );
            }
            table.cells(
                "relay CPU, % of a core",
                per(&|r| fmt_opt(r.relay_cpu_percent(), 1), n),
            );
            table.cells(
                "  of which in the kernel, %",
                per(&|r| fmt_opt(r.relay_kernel_percent(), 0), n),
            );
            table.cells(
                "relay peak RSS (VmHWM), MiB",
                per(
                    &|r| fmt_opt(r.peak_rss_kib.map(|k| k as f64 / 1024.0), 1),
                    n,
                ),
            );
            table.cells(
                "relay RSS per active session, KiB",
                per(&|r| fmt_opt(r.rss_per_session_kib(), 1), n),
            );
            table.cells(
                "added latency, audio p50 / p99, ms",
                per(&|r| p50_p99(&r.audio_ms), n),
            );
            table.cells(
                "added latency, tokens p50 / p99, ms",
                per(&|r| p50_p99(&r.token_ms), n),
            );
            table.cells(
                "words lost (of expected)",
                per(
                    &|r| {
                        let mut cell = format!("{} of {}", r.words_lost, r.words_expected());
                        if r.sessions_failed > 0 {
                            cell.push_str(&format!(", {} failed", r.sessions_failed));
                        }
                        if r.words_extra > 0 {
                            cell.push_str(&format!(", {} extra", r.words_extra));
                        }
                        cell
                    },
                    n,
                ),
            );
            table.cells(
                "bench process (load gen + emulator) CPU, % of a core",
                per(&|r| fmt_opt(r.bench_cpu_percent(), 1), n),
            );
            table.cells(
                "load generator tick lag p99, ms",
                per(&|r| fmt_opt(percentile(&r.tick_lag_ms, 0.99), 2), n),
            );
            table.cells(
                "other processes' CPU (+ steal), % of a core",
                per(
                    &|r| {
                        format!(
                            "{} (+{})",
                            fmt_opt(r.others_cpu_percent(), 1),
                            fmt_opt(r.steal_percent(), 1)
                        )
                    },
                    n,
                ),
            );
        }

        // The search's rows, when there was a search.
        if !largest.is_empty() {
            let searched: BTreeSet<usize> = results.keys().map(|(_, n)| *n).collect();
            table.section(format!(
                "p99 added latency, audio / tokens (ms), by N: `ok` is under {SUSTAIN_P99_MS} ms with no word lost"
            ));
            for n in searched {
                table.cells(
                    format!("N = {n}"),
                    per(
                        &|r| {
                            let verdict = if r.sustained() {
                                "ok".to_owned()
                            } else if r.words_lost > 0 || r.sessions_failed > 0 {
                                format!("{} lost", r.words_lost)
                            } else {
                                "over".to_owned()
                            };
                            format!(
                                "{} / {} {verdict}",
                                fmt_opt(percentile(&r.audio_ms, 0.99), 2),
                                fmt_opt(percentile(&r.token_ms, 0.99), 2)
                            )
                        },
                        n,
                    ),
                );
            }
            table.cells(
                format!("largest N with p99 < {SUSTAIN_P99_MS} ms, no word lost"),
                relays
                    .iter()
                    .map(|r| match largest.get(r) {
                        Some((Some(n), true)) => format!("≥ {n} (every step)"),
                        Some((Some(n), false)) => n.to_string(),
                        Some((None, _)) => "none".to_owned(),
                        None => "—".to_owned(),
                    })
                    .collect(),
            );
        }

        table.section("once per run");
        for (pool, figures) in first_audio {
            let text = match figures {
                Ok(f) => format!(
                    "p50 {} ms, p99 {} ms, max {} ms ({} sessions)",
                    fmt_opt(percentile(f, 0.5), 2),
                    fmt_opt(percentile(f, 0.99), 2),
                    fmt_opt(percentile(f, 1.0), 2),
                    f.len()
                ),
                Err(e) => format!("failed: {e}"),
            };
            table.wide(
                format!("time to first forwarded audio, --warm-pool {pool} (unix socket, wss://)"),
                text,
            );
        }
        let filter_text = match filter {
            Ok(f) => format!(
                "CPU {:.2} % of a core ({:.1} s per audio-hour), peak RSS {:.1} MiB, {} of {} words ({} s)",
                f.cpu_percent(),
                f.cpu_s / (f.audio_s as f64 / 3600.0),
                f.peak_rss_kib / 1024.0,
                f.words,
                f.expected,
                f.audio_s
            ),
            Err(e) => format!("skipped: {e}"),
        };
        table.wide("the filter alone, one real-time stream", filter_text);
        table
    }
}

impl RunResult {
    /// Remarks for the notes under the table.
    pub(crate) fn notes(&self, cores: usize) -> Vec<String> {
        let mut notes = Vec::new();
        let at = format!("{} N = {}", self.relay.title(), self.n);
        if let Some(problem) = self.incomplete() {
            notes.push(format!("{at}: {problem}"));
        }
        if let Some(tail) = &self.relay_log_tail {
            notes.push(format!("{at}: the relay's log ends:\n{tail}"));
        }
        if self.frames_missing > 0 {
            notes.push(format!(
                "{at}: {} chunks never reached the emulator",
                self.frames_missing
            ));
        }
        if self.upstream_restarts > 0 {
            notes.push(format!(
                "{at}: {} upstream sessions restarted (reconnects)",
                self.upstream_restarts
            ));
        }
        if self.strays > 0 {
            notes.push(format!(
                "{at}: {} emulator events of unknown sessions",
                self.strays
            ));
        }
        let others = self.others_cpu_percent().unwrap_or(0.0) + self.steal_percent().unwrap_or(0.0);
        if others > 10.0 {
            notes.push(format!(
                "{at}: other processes (or the hypervisor) took {others:.0} % of a core \
                 during the steady phase: these figures are disturbed"
            ));
        }
        let total = self.relay_cpu_percent().unwrap_or(0.0)
            + self.bench_cpu_percent().unwrap_or(0.0)
            + others;
        if total > 85.0 * cores as f64 {
            notes.push(format!(
                "{at}: the machine is saturated (relay {} % + bench process {} % + others \
                 {others:.0} % of {} %): latency includes waiting for a core",
                fmt_opt(self.relay_cpu_percent(), 0),
                fmt_opt(self.bench_cpu_percent(), 0),
                100 * cores
            ));
        }
        let lag = percentile(&self.tick_lag_ms, 0.99).unwrap_or(0.0);
        if lag > 5.0 && total > 60.0 * cores as f64 {
            notes.push(format!(
                "{at}: the load generator's clock fired late (tick lag p99 {lag:.1} ms): \
                 it was short of CPU, and sent less than real time"
            ));
        } else if lag > 3.0 && total < 25.0 * cores as f64 {
            // Up to 2 ms is tokio's timer: a 1 ms wheel, deadlines rounded up.
            notes.push(format!(
                "{at}: the machine was mostly idle ({total:.0} % of {} %) yet the load \
                 generator's clock fired up to {lag:.1} ms late (p99): waking an idle core \
                 is slow here, and p99 latencies of that order are partly that",
                100 * cores
            ));
        }
        notes
    }
}
