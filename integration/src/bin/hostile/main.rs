// hostile: a vhost-user frontend that is wrong on purpose, one named case per run, so the
// tests can check that fastpathd survives it, that only its port is reset, and that the
// other tenants' traffic goes on: malformed protocol (`protocol`), and tenants attacking
// from live ports (`attacks`, on `tenant`'s rings, all over `frontend`).
//! A deliberately broken vhost-user frontend for robustness tests.

mod attacks;
mod frontend;
mod protocol;
mod tenant;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use attacks::Outcome;
use tenant::Memory;

/// The tenant attacks, with what each does (they run for `--secs`, reconnecting after
/// every reset, and print a JSON line of what they did).
const TENANT_CASES: &[(&str, &str)] = &[
    ("no-read", "100,000 GET_FEATURES per connection, never reading a reply"),
    ("over-cap", "registers --bytes (256 MiB) of memory, more than its port's cap"),
    ("sparse", "registers --bytes (1 GiB) of a memfd it never touches, holding it 1 s"),
    ("flood", "10,000 control messages a second (GET_FEATURES, SET_MEM_TABLE of 64 MiB)"),
    ("memtable-churn", "SET_MEM_TABLE a thousand times a second while its queues run"),
    ("truncate-memfd", "shrinks the memfd behind its rings and buffers while traffic runs"),
    ("truncate-hugetlbfs", "shrinks the hugetlbfs files behind its rings and buffers while traffic runs"),
    ("fd-churn", "GET_FEATURES with 253 fds on --connections (2,600) fresh connections"),
    ("call-eventfd", "its call fd a blocking eventfd at its maximum, interrupts wanted, traffic both ways"),
    ("call-pipe", "its call fd the write end of a full pipe, interrupts wanted"),
    ("zero-chains", "a 32,768-entry queue kept full of one chain of 32,768 zero-length descriptors"),
    ("giant-frames", "512 MiB aliased frames from SOCKET to --peer, which posts receive chains as big"),
    ("spoof", "2,000 frames a second with the --neighbour's source MAC"),
];

/// The flags after CASE SOCKET.
struct Opts {
    secs: Duration,
    peer: Option<PathBuf>,
    hugedir: PathBuf,
    connections: u64,
    bytes: Option<u64>,
    neighbour: [u8; 6],
    dst: [u8; 6],
}

fn mac(s: &str) -> Result<[u8; 6]> {
    let parts: Vec<u8> = s
        .split(':')
        .map(|p| u8::from_str_radix(p, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("MAC '{s}'"))?;
    parts.try_into().map_err(|_| anyhow::anyhow!("MAC '{s}' must have 6 parts"))
}

fn parse_opts(args: &[String]) -> Result<Opts> {
    let mut o = Opts {
        secs: Duration::from_secs(3),
        peer: None,
        hugedir: "/dev/hugepages".into(),
        connections: 2600,
        bytes: None,
        neighbour: [2, 0, 0, 0, 0, 2],
        dst: [2, 0, 0, 0, 0, 1],
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let v = it.next().with_context(|| format!("{flag} needs a value"))?;
        let num = || v.parse::<f64>().with_context(|| format!("{flag} {v}: not a number"));
        match flag.as_str() {
            "--secs" => o.secs = Duration::try_from_secs_f64(num()?).with_context(|| format!("--secs {v}"))?,
            "--peer" => o.peer = Some(v.into()),
            "--hugedir" => o.hugedir = v.into(),
            "--connections" => o.connections = num()? as u64,
            "--bytes" => o.bytes = Some(num()? as u64),
            "--neighbour" => o.neighbour = mac(v)?,
            "--dst" => o.dst = mac(v)?,
            _ => bail!("unknown flag {flag}"),
        }
    }
    Ok(o)
}

fn run_tenant(case: &str, path: &std::path::Path, o: &Opts) -> Result<Outcome> {
    let secs = o.secs;
    match case {
        "no-read" => attacks::no_read(path, secs),
        "over-cap" => attacks::register(path, secs, o.bytes.unwrap_or(256 << 20), Duration::from_millis(200)),
        "sparse" => attacks::register(path, secs, o.bytes.unwrap_or(1 << 30), Duration::from_secs(1)),
        "flood" => attacks::flood(path, secs),
        "memtable-churn" => attacks::memtable_churn(path, secs),
        "truncate-memfd" => attacks::truncate(path, secs, &Memory::Memfd),
        "truncate-hugetlbfs" => attacks::truncate(path, secs, &Memory::Hugetlbfs(o.hugedir.clone())),
        "fd-churn" => attacks::fd_churn(path, secs, o.connections),
        "call-eventfd" => attacks::call_eventfd(path, secs),
        "call-pipe" => attacks::call_pipe(path, secs),
        "zero-chains" => attacks::zero_chains(path, secs),
        "giant-frames" => attacks::giant_frames(path, o.peer.as_deref().context("giant-frames needs --peer")?, secs),
        "spoof" => attacks::spoof(path, secs, o.neighbour, o.dst),
        other => bail!("unknown case '{other}'"),
    }
}

fn usage() -> ! {
    eprintln!("usage: hostile CASE SOCKET [--secs S] [--peer SOCKET] [--hugedir DIR] [--connections N] [--bytes N] [--neighbour MAC] [--dst MAC]\ncases:");
    for (c, what) in protocol::CASES.iter().chain(TENANT_CASES) {
        eprintln!("  {c:<18} {what}");
    }
    std::process::exit(2);
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 || args[1] == "--help" {
        usage();
    }
    let (case, path) = (args[1].as_str(), PathBuf::from(&args[2]));
    if protocol::CASES.iter().any(|c| c.0 == case) {
        if args.len() > 3 {
            bail!("protocol case '{case}' takes no flags");
        }
        return protocol::run(case, &path);
    }
    if !TENANT_CASES.iter().any(|c| c.0 == case) {
        eprintln!("unknown case '{case}'");
        usage();
    }
    let o = parse_opts(&args[3..])?;
    let out = run_tenant(case, &path, &o)?;
    println!("{}", out.json(case));
    Ok(())
}
