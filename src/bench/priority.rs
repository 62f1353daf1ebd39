//! The scheduling priority of a benchmark run: the measuring process at
//! real-time priority, the helpers that take part in no measurement at the
//! ordinary one.

use std::io;

/// The real-time priority (SCHED_RR) a benchmark run measures at: above every
/// ordinary process, below the kernel's threaded interrupt handlers (50).
pub const RT_PRIORITY: libc::c_int = 10;

/// Moves every thread of this process to the real-time round-robin class at
/// [`RT_PRIORITY`]; threads and processes started afterwards (the lab's shaper,
/// third-party clients) inherit it. Call it before the lab is built.
///
/// Why: the latencies are measured in this process, and the DNS server and the
/// responder of the run are threads of it too, so a dial wakes several threads.
/// At normal priority each wake-up waits for a CPU on a loaded machine: with four
/// busy processes on two cores, `bench --quick` measured healthy siprace dials at a
/// p95 of 12-89 ms (1 ms idle) and failed 1-6 of its 16 checks in each of 3 runs
/// (at nice -20 still 1 of 3). Real-time threads preempt ordinary work when they
/// wake, so the figures are the protocol's again (3 of 3 runs passed, figures as
/// on an idle machine). The run mostly waits on timers and sockets; the kernel
/// keeps 5 % of each CPU for ordinary work anyway (`sched_rt_runtime_us`).
pub fn measure_at_realtime_priority() -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: RT_PRIORITY,
    };
    let tasks = std::fs::read_dir("/proc/self/task")
        .map_err(|e| io::Error::new(e.kind(), format!("listing this process's threads: {e}")))?;
    for task in tasks.flatten() {
        let Some(tid) = task
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        // SAFETY: a valid sched_param; tid is a thread of this process (one that
        // ended meanwhile gives ESRCH).
        if unsafe { libc::sched_setscheduler(tid, libc::SCHED_RR, &param) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(io::Error::new(
                    e.kind(),
                    format!("SCHED_RR {RT_PRIORITY}: {e}"),
                ));
            }
        }
    }
    Ok(())
}

/// Makes `cmd` run at ordinary priority (SCHED_OTHER), for helpers that take part
/// in no measurement (the packet capture, whose timestamps the kernel takes).
pub fn at_ordinary_priority(cmd: &mut std::process::Command) -> &mut std::process::Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: the hook only calls sched_setscheduler, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let param = libc::sched_param { sched_priority: 0 };
            if libc::sched_setscheduler(0, libc::SCHED_OTHER, &param) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
    }
}
