// Entry point of `cargo xtask`: parses the subcommand and dispatches to its module.
// Every subcommand runs under the Ctrl-C flag installed here; errors become the exit code.

//! `cargo xtask`: developer tasks for fastpath (setup, test, bench, demo, package).

mod bench;
mod bundle;
mod demo;
mod fuzz;
mod package;
mod procs;
mod scratch;
mod setup;
mod test;
mod workspace;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::workspace::Workspace;

/// Developer tasks for the fastpath workspace.
#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", about = "Developer tasks for fastpath")]
struct Cli {
    /// The task to run.
    #[command(subcommand)]
    cmd: Cmd,
}

/// One task; add new tasks (fuzz, ...) as new variants and a match arm in `main`.
#[derive(Subcommand)]
enum Cmd {
    /// Install the Debian packages, reserve and mount hugepages, fix cgroups (idempotent).
    Setup,
    /// Setup, build everything in release mode, run the whole test suite against real peers.
    Test(test::TestArgs),
    /// Setup, build, then race our binaries against DPDK testpmd and OVS-DPDK.
    Bench(bench::BenchArgs),
    /// Setup, build, then run a switch with a generator and a sink until Ctrl-C.
    Demo(demo::DemoArgs),
    /// Run the cargo-fuzz targets (vhost-user messages, descriptor chains) for a bounded time.
    Fuzz(fuzz::FuzzArgs),
    /// Build the Debian package, target/deb/fastpath_VERSION_amd64.deb (dpkg-deb).
    #[command(alias = "deb")]
    Package(package::PackageArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = procs::install_interrupt_handler() {
        eprintln!("xtask: error: {e:#}");
        return ExitCode::FAILURE;
    }
    let ws = Workspace::locate();
    let result = match cli.cmd {
        Cmd::Setup => setup::run(),
        Cmd::Test(args) => test::run(&ws, &args),
        Cmd::Bench(args) => bench::run(&ws, &args),
        Cmd::Demo(args) => demo::run(&ws, &args),
        Cmd::Fuzz(args) => fuzz::run(&ws, &args),
        Cmd::Package(args) => package::run(&ws, &args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<procs::Interrupted>() => {
            eprintln!("xtask: interrupted; children stopped and temporary files removed");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
