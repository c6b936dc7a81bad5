// fastpath-cni: reads CNI_COMMAND and the network config on stdin, runs the library, and
// prints the result, or the CNI error object and exits non-zero.
//! The `fastpath-cni` binary.

use fastpath_cni::netconf::{self, SUPPORTED_VERSIONS};
use std::io::Read;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut stdin = String::new();
    let read = std::io::stdin().read_to_string(&mut stdin);
    let out = match read {
        Ok(_) => fastpath_cni::run(|k| std::env::var(k).ok(), &stdin),
        Err(e) => {
            Err(fastpath_cni::error::CniError::new(fastpath_cni::error::IO_FAILURE, format!("reading stdin: {e}")))
        }
    };
    match out {
        Ok(Some(v)) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            let v = netconf::version_of(&stdin).filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()));
            println!("{}", e.to_json(v.as_deref().unwrap_or("1.0.0")));
            eprintln!("fastpath-cni: {e}");
            ExitCode::FAILURE
        }
    }
}
