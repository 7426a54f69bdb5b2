//! `/proc`: CPU and memory of the operator processes, and the test environment's servers
//! (etcd, kube-apiserver, bao, moto) found among this test's relatives.

use std::path::{Path, PathBuf};

use super::probe::Counts;
use crate::common::TestEnv;

pub fn proc_status_mib(pid: u32, field: &str) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

pub fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Fields of `/proc/PID/stat` from field 3 (state) on: the command name may hold spaces.
fn stat_fields(pid: &str) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// utime + stime of `pid` (every thread) in seconds.
pub fn proc_cpu_secs(pid: &str, ticks: f64) -> Option<f64> {
    let fields = stat_fields(pid)?;
    // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks)
}

fn parent(pid: &str) -> Option<String> {
    stat_fields(pid)?.get(1).cloned()
}

fn argv(pid: &str) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The label under which the benchmark's own CPU (this test process: the watch, the LISTs,
/// the scrapes) is reported next to the servers'.
pub const BENCH_CPU: &str = "benchmark (this test)";

/// The test environment's servers: etcd, kube-apiserver, bao and moto, by process.
///
/// They are the descendants of the `testenv.py` that runs this test (so another test
/// environment on the same machine is never counted), recognised by the program they run
/// (`argv[0]`, or `argv[1]` for moto's Python script). Without such an ancestor (an
/// environment started with `testenv.py up`), the processes whose working directory is the
/// environment's `TESTENV_DIR`.
#[derive(Default)]
pub struct Servers {
    /// `("etcd", pid)`, ...
    pids: Vec<(String, String)>,
}

const SERVER_PROGRAMS: [(&str, &str); 4] = [
    ("etcd", "etcd"),
    ("kube-apiserver", "kube-apiserver"),
    ("bao", "bao"),
    ("moto_server", "moto"),
];

impl Servers {
    pub fn find(env: &TestEnv) -> Servers {
        let all: Vec<String> = std::fs::read_dir("/proc")
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.chars().all(|c| c.is_ascii_digit()))
                    .collect()
            })
            .unwrap_or_default();
        let kind = |pid: &str| -> Option<String> {
            let argv = argv(pid);
            argv.iter().take(2).find_map(|a| {
                let base = Path::new(a).file_name()?.to_str()?;
                SERVER_PROGRAMS
                    .iter()
                    .find(|(program, _)| *program == base)
                    .map(|(_, kind)| kind.to_string())
            })
        };
        let testenv = {
            let mut pid = std::process::id().to_string();
            let mut found = None;
            for _ in 0..64 {
                let Some(pp) = parent(&pid) else { break };
                if pp == "0" {
                    break;
                }
                if argv(&pp).iter().take(3).any(|a| a.ends_with("testenv.py")) {
                    found = Some(pp);
                    break;
                }
                pid = pp;
            }
            found
        };
        let under: Box<dyn Fn(&str) -> bool> = match (testenv, env.vars.get("TESTENV_DIR")) {
            (Some(root), _) => Box::new(move |pid: &str| {
                let mut p = pid.to_string();
                for _ in 0..64 {
                    match parent(&p) {
                        Some(pp) if pp == root => return true,
                        Some(pp) if pp != "0" => p = pp,
                        _ => return false,
                    }
                }
                false
            }),
            (None, Some(dir)) => {
                let dir = PathBuf::from(dir);
                Box::new(move |pid: &str| {
                    std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == dir)
                })
            }
            (None, None) => Box::new(|_: &str| false),
        };
        let pids = all
            .iter()
            .filter_map(|pid| Some((kind(pid)?, pid.clone())))
            .filter(|(_, pid)| under(pid))
            .collect();
        Servers { pids }
    }

    pub fn is_empty(&self) -> bool {
        self.pids.is_empty()
    }

    /// CPU seconds so far by server (processes of one kind summed), and this test's own.
    pub fn cpu(&self, ticks: f64) -> Counts {
        let mut out = Counts::new();
        for (kind, pid) in &self.pids {
            if let Some(s) = proc_cpu_secs(pid, ticks) {
                *out.entry(kind.clone()).or_default() += s;
            }
        }
        if !self.pids.is_empty()
            && let Some(s) = proc_cpu_secs("self", ticks)
        {
            out.insert(BENCH_CPU.into(), s);
        }
        out
    }
}
