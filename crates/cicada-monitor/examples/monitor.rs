//! Prints this machine's limits and a few samples: `cargo run -p cicada-monitor --example monitor [fds]`.
//! With a number, opens that many extra file descriptors first, then times `Monitor::sample`.

use std::time::{Duration, Instant};

use cicada_monitor::{LagProbe, Monitor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let extra_fds: usize = std::env::args().nth(1).map_or(Ok(0), |n| n.parse())?;
    let files: Vec<std::fs::File> = (0..extra_fds)
        .map(|_| std::fs::File::open("/dev/null"))
        .collect::<Result<_, _>>()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    runtime.block_on(async {
        let mut monitor = Monitor::new()?;
        println!("{:#?}", monitor.limits());
        let probe = LagProbe::spawn(LagProbe::DEFAULT_INTERVAL);
        monitor.attach_lag_probe(&probe);
        for round in 0..3 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            // Round 1 burns one core for 300 ms on the runtime thread: CPU and lag both show it.
            if round == 1 {
                let start = Instant::now();
                while start.elapsed() < Duration::from_millis(300) {
                    std::hint::black_box(start.elapsed());
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            println!("{:#?}", monitor.sample());
        }
        let rounds = 1000;
        let start = Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(monitor.sample());
        }
        println!(
            "sample(): {:?} each, with {} fds open",
            start.elapsed() / rounds,
            monitor.last().open_fds.unwrap_or(0)
        );
        Ok::<_, Box<dyn std::error::Error>>(())
    })?;
    drop(files);
    Ok(())
}
