//! Runs the kernel probe on this machine and checks that its answers agree with each other and
//! with what the kernel does.

mod common;

use io_uring::{opcode, IoUring};
use regio_adapters::probe::{KernelProbe, Outcome, SetupFlag, REGIO_OPCODES};

fn probe() -> KernelProbe {
    KernelProbe::run().expect("the probe runs wherever /proc is mounted")
}

#[test]
fn the_status_matches_what_io_uring_setup_does() {
    let probe = probe();
    assert_eq!(
        probe.io_uring().is_enabled(),
        IoUring::new(8).is_ok(),
        "{probe}"
    );
}

#[test]
fn an_enabled_io_uring_runs_a_nop() {
    let probe = probe();
    if !probe.io_uring().is_enabled() {
        return regio_testkit::skip(&format!("io_uring is disabled here: {}", probe.io_uring()));
    }
    assert!(probe.opcode_probe().is_supported(), "{probe}");
    assert!(probe.supports_opcode(opcode::Nop::CODE), "{probe}");

    let mut ring = IoUring::new(8).unwrap();
    let nop = opcode::Nop::new().build().user_data(7);
    // SAFETY: a NOP refers to no memory.
    unsafe { ring.submission().push(&nop).unwrap() };
    ring.submit_and_wait(1).unwrap();
    let cqe = ring.completion().next().unwrap();
    assert_eq!((cqe.user_data(), cqe.result()), (7, 0));
}

#[test]
fn dependent_answers_agree() {
    let probe = probe();
    if !probe.io_uring().is_enabled() {
        return regio_testkit::skip(&format!("io_uring is disabled here: {}", probe.io_uring()));
    }
    if probe.setup_flag(SetupFlag::SqAff) {
        assert!(probe.setup_flag(SetupFlag::Sqpoll));
    }
    if probe.setup_flag(SetupFlag::DeferTaskrun) {
        assert!(probe.setup_flag(SetupFlag::SingleIssuer));
    }
    if probe.clone_buffers() {
        assert!(probe.registrations().fixed_buffers.is_supported());
    }
    let flags: Vec<_> = probe.setup_flags().iter().map(|r| r.flag).collect();
    assert_eq!(flags, SetupFlag::ALL);
    assert_eq!(probe.opcodes().len(), REGIO_OPCODES.len());
    for o in probe.opcodes() {
        assert_eq!(
            o.supported,
            probe.supports_opcode(o.opcode.code),
            "{}",
            o.opcode.name
        );
    }
}

#[test]
fn every_gap_is_explained() {
    let probe = probe();
    let missing_flags = probe
        .setup_flags()
        .iter()
        .filter(|r| !r.outcome.is_supported())
        .count();
    let missing_ops = probe.opcodes().iter().filter(|o| !o.supported).count();
    if probe.io_uring().is_enabled() {
        assert!(
            probe.degradations().len() >= missing_flags + missing_ops,
            "{probe}"
        );
    } else {
        assert_eq!(probe.degradations().len(), 1, "{probe}");
        for r in probe.setup_flags() {
            assert!(matches!(r.outcome, Outcome::NotTried { .. }));
        }
    }
    let report = probe.to_string();
    for d in probe.degradations() {
        assert!(report.contains(&d.missing), "{report}");
    }
    if probe.degradations().is_empty() {
        assert!(report.contains("Everything regio uses is here"), "{report}");
    }
}
