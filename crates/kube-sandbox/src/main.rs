//! `kube-sandbox`: run the simulated API server alone until Ctrl-C.
//!
//! ```text
//! kube-sandbox --kubeconfig FILE [--listen 127.0.0.1:6443] [--rollout-delay 1s] [--state-dir DIR]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use kube_sandbox::SandboxOptions;

const USAGE: &str =
    "usage: kube-sandbox --kubeconfig FILE [--listen ADDR] [--rollout-delay DURATION]
                    [--state-dir DIR]

  --kubeconfig FILE         where to write a kubeconfig for kubectl and clients
  --listen ADDR             address to listen on (default 127.0.0.1:0, a free port)
  --rollout-delay DURATION  how long a simulated pod takes to become ready, as 1s or 250ms
                            (default 1s)
  --state-dir DIR           keep the certificates, token and objects in DIR, saved after
                            every write, and start from them if DIR has them: restarted
                            on the same --listen address, the sandbox is the same cluster
                            and the kubeconfig it wrote before still works";

#[derive(Debug)]
struct Args {
    kubeconfig: PathBuf,
    options: SandboxOptions,
}

fn parse(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut kubeconfig = None;
    let mut options = SandboxOptions {
        rollout_delay: Duration::from_secs(1),
        ..SandboxOptions::default()
    };
    while let Some(flag) = argv.next() {
        let mut value = || argv.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--kubeconfig" => kubeconfig = Some(PathBuf::from(value()?)),
            "--listen" => {
                let v = value()?;
                options.listen = v.parse().map_err(|_| {
                    format!("--listen: {v:?} is not an address such as 127.0.0.1:6443")
                })?;
            }
            "--rollout-delay" => {
                let v = value()?;
                options.rollout_delay = humantime::parse_duration(&v).map_err(|e| {
                    format!("--rollout-delay: {v:?} is not a duration such as 1s: {e}")
                })?;
            }
            "--state-dir" => options.state_dir = Some(PathBuf::from(value()?)),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let kubeconfig = kubeconfig.ok_or("--kubeconfig is required")?;
    Ok(Args {
        kubeconfig,
        options,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(problem) if problem.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(problem) => {
            eprintln!("kube-sandbox: {problem}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match kube_sandbox::serve_forever(args.options, &args.kubeconfig).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kube-sandbox: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Result<Args, String> {
        parse(line.split_whitespace().map(String::from))
    }

    #[test]
    fn flags_parse_and_bad_ones_are_named() {
        let a = args("--kubeconfig kc --listen 127.0.0.1:6443 --rollout-delay 250ms").unwrap();
        assert_eq!(a.kubeconfig, PathBuf::from("kc"));
        assert_eq!(a.options.listen.port(), 6443);
        assert_eq!(a.options.rollout_delay, Duration::from_millis(250));
        assert_eq!(a.options.state_dir, None);
        let a = args("--kubeconfig kc --state-dir st").unwrap();
        assert_eq!(a.options.state_dir, Some(PathBuf::from("st")));
        assert!(
            args("--listen 127.0.0.1:1")
                .unwrap_err()
                .contains("--kubeconfig")
        );
        assert!(
            args("--kubeconfig kc --rollout-delay soon")
                .unwrap_err()
                .contains("soon")
        );
        assert!(
            args("--kubeconfig kc --port 1")
                .unwrap_err()
                .contains("--port")
        );
        assert!(args("--kubeconfig").unwrap_err().contains("needs a value"));
    }
}
