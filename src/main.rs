use clap::Parser;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let code = match ctxd::cli::run(ctxd::cli::Cli::parse()).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("ctxd: {error}");
            2
        }
    };
    std::process::exit(code);
}
