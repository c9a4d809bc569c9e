//! The signals that stop a run: Ctrl-C (SIGINT) and SIGTERM, which Kubernetes, Docker and systemd send.
//!
//! Both mean the same: the first stops the test gracefully, as the end of the run time does (users get
//! `--stop-timeout`, every report is written); a second one, of either kind, ends the process at once with the
//! shell's code for that signal (130 for SIGINT, 143 for SIGTERM). The handlers are installed when the run starts,
//! before any load is sent, so a signal never finds the process with the default (instant death) disposition.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// Which signal arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopSignal {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM.
    Terminate,
}

impl StopSignal {
    /// The exit code of a process ended by this signal, as a shell reports it (128 + the signal's number).
    pub(crate) fn exit_code(self) -> i32 {
        match self {
            StopSignal::Interrupt => 130,
            StopSignal::Terminate => 143,
        }
    }

    /// How the run's summary names the stop.
    pub(crate) fn stop_reason(self) -> &'static str {
        match self {
            StopSignal::Interrupt => "interrupted",
            StopSignal::Terminate => "terminated (SIGTERM)",
        }
    }

    fn name(self) -> &'static str {
        match self {
            StopSignal::Interrupt => "Ctrl-C",
            StopSignal::Terminate => "SIGTERM",
        }
    }
}

/// Listens for SIGINT and SIGTERM.
pub(crate) struct StopSignals {
    interrupt: Signal,
    terminate: Signal,
}

impl StopSignals {
    /// Install the handlers (inside the tokio runtime).
    pub(crate) fn install() -> std::io::Result<StopSignals> {
        Ok(StopSignals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// The next signal.
    pub(crate) async fn next(&mut self) -> StopSignal {
        tokio::select! {
            _ = self.interrupt.recv() => StopSignal::Interrupt,
            _ = self.terminate.recv() => StopSignal::Terminate,
        }
    }

    /// While users stop and reports are written, a further signal ends the process at once. `first` is the
    /// signal that started the stop, if one did.
    pub(crate) fn exit_on_next(mut self, first: Option<StopSignal>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            if first.is_none() {
                let signal = self.next().await;
                eprintln!(
                    "{}: the test is already stopping; send it again to exit at once",
                    signal.name()
                );
            }
            let signal = self.next().await;
            eprintln!(
                "second {}: exiting without waiting for users or writing reports",
                signal.name()
            );
            std::process::exit(signal.exit_code());
        })
    }
}
