//! Runs one scenario file and prints its log: `cargo run -p tandem-ha
//! --example sim -- FILE`.

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: sim SCENARIO-FILE");
        std::process::exit(2);
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(2);
        }
    };
    let sc = match tandem_ha::sim::scenario::Scenario::parse(&text) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            std::process::exit(1);
        }
    };
    let r = rt.block_on(tandem_ha::sim::scenario::Sim::run(&sc));
    for l in &r.log {
        println!("{l}");
    }
    for v in &r.violations {
        println!("VIOLATION: {v}");
    }
    std::process::exit(i32::from(!r.violations.is_empty()));
}
