//! The `baton` command line. Argument parsing and wiring only; behavior lives in the library.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use baton::config::Config;
use baton::fix::dictionary::Dictionary;
use baton::fix::session::Session;
use baton::fix::store::MmapStore;
use baton::gateway::{Acceptor, Sessions};

/// FIX session gateway that keeps counterparties connected while the engine behind it changes.
#[derive(Parser)]
#[command(name = "baton", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the FIX gateway (acceptor and session layer).
    Gateway {
        /// Config file; without it the embedded default (deploy/baton.toml) is used.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Overrides `[gateway] listen` (use port 0 to pick a free port; the bound address is
        /// printed on stdout).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Overrides `[gateway] store_dir`.
        #[arg(long)]
        store_dir: Option<PathBuf>,
    },
    /// Check a config file and print the sessions it defines.
    CheckConfig {
        /// Config file; without it the embedded default is checked.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Gateway {
            config,
            listen,
            store_dir,
        } => gateway(config, listen, store_dir),
        Command::CheckConfig { config } => {
            let loaded = Config::load(config.as_deref())?;
            for session in loaded.session_configs("config")? {
                println!(
                    "{} -> {} ({})",
                    session.sender_comp_id,
                    session.target_comp_id,
                    if session.schedule.non_stop {
                        "non-stop"
                    } else {
                        "scheduled"
                    }
                );
            }
            Ok(())
        }
    }
}

fn gateway(
    config_path: Option<PathBuf>,
    listen: Option<std::net::SocketAddr>,
    store_dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    let mut config = Config::load(config_path.as_deref())?;
    if let Some(listen) = listen {
        config.gateway.listen = listen;
    }
    if let Some(store_dir) = store_dir {
        config.gateway.store_dir = store_dir;
    }
    let dictionary = Dictionary::venue();
    let mut sessions = Vec::new();
    for session_config in config.session_configs("config")? {
        let dir = config.gateway.store_dir.join(format!(
            "{}-{}",
            session_config.sender_comp_id, session_config.target_comp_id
        ));
        let store = MmapStore::open(&dir, config.gateway.durability)
            .with_context(|| format!("opening session store {}", dir.display()))?;
        sessions.push(Session::new(session_config, store, dictionary));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let sessions = Sessions::new(sessions);
        let (acceptor, handle) = Acceptor::bind(
            config.gateway.listen,
            sessions,
            None,
            config.gateway.connections_max,
        )
        .await
        .with_context(|| format!("listening on {}", config.gateway.listen))?;
        println!("baton gateway listening on {}", handle.local_addr());
        let signal_handle = handle.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                tracing::info!("interrupt: shutting down");
                signal_handle.shutdown();
            }
        });
        acceptor.run().await.context("acceptor failed")
    })
}
