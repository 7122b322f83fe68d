//! Per-type push and NACK counts, and when a proxy counts as converged on a change.
//! Durations are not asserted (no timed unit tests): only which events add samples.

use std::time::Instant;

use super::*;

fn changed(sets: &[(ResourceType, &[(&str, &str)])]) -> Arc<Snapshot> {
    Arc::new(Arc::unwrap_or_clone(mk_snapshot(sets)).changed_at(Instant::now()))
}

fn convergence(h: &Harness) -> u64 {
    h.registry.stats().convergence.count()
}

fn push_latency(h: &Harness, ty: ResourceType) -> u64 {
    h.registry.stats().push_latency[ty.index()].count()
}

#[test]
fn a_change_converges_once_every_response_it_caused_is_acknowledged() {
    let mut h = Harness::new(XdsApi::StateOfTheWorld);
    h.snapshot(&changed(&[(CDS, &[("a", "1")]), (LDS, &[("l", "1")])]));
    let c = one(h.sotw(sotw_req(CDS, &[], "", "")));
    h.sotw_ack(&c, &[]);
    let l = one(h.sotw(sotw_req(LDS, &[], "", "")));
    h.sotw_ack(&l, &[]);
    assert_eq!(convergence(&h), 0, "a stream's first snapshot is no change to converge on");
    assert_eq!(push_latency(&h, CDS), 0);

    // A change to both types: one sample, once both are acknowledged.
    let out = h.snapshot(&changed(&[(CDS, &[("a", "2")]), (LDS, &[("l", "2")])]));
    assert_eq!(out.len(), 2);
    assert_eq!((push_latency(&h, CDS), push_latency(&h, LDS)), (1, 1));
    h.sotw_ack(&out[0], &[]);
    assert_eq!(convergence(&h), 0, "listeners not acknowledged yet");
    h.sotw_ack(&out[1], &[]);
    assert_eq!(convergence(&h), 1);
    // A duplicate ACK adds nothing.
    h.sotw_ack(&out[1], &[]);
    assert_eq!(convergence(&h), 1);

    // A new snapshot that changes nothing the proxy holds: nothing sent, no sample.
    assert!(h.snapshot(&changed(&[(CDS, &[("a", "2")]), (LDS, &[("l", "2")])])).is_empty());
    assert_eq!(convergence(&h), 1);
    assert_eq!(h.registry.stats().pushes(CDS), 2);
    assert_eq!(h.registry.stats().pushes(LDS), 2);
    assert_eq!(h.registry.stats().pushes(RDS), 0);
}

#[test]
fn two_changes_in_flight_converge_as_one_and_a_nack_holds_convergence() {
    let mut h = Harness::new(XdsApi::Delta);
    h.snapshot(&mk_snapshot(&[(CDS, &[("a", "1")])]));
    let first = one(h.delta(delta_req(CDS, &[], &[], "")));
    h.delta_ack(&first);

    let r1 = one(h.snapshot(&changed(&[(CDS, &[("a", "2")])])));
    let r2 = one(h.snapshot(&changed(&[(CDS, &[("a", "3")])])));
    h.delta_ack(&r1);
    assert_eq!(convergence(&h), 0, "the second change is still in flight");
    h.delta_ack(&r2);
    assert_eq!(convergence(&h), 1, "one sample, timed from the earlier change");

    // A NACKed change has not converged; the fix that follows, acknowledged, has.
    let bad = one(h.snapshot(&changed(&[(CDS, &[("a", "bad")])])));
    assert!(h.delta(delta_nack(CDS, bad.nonce(), "invalid cluster a")).is_empty());
    assert_eq!(h.registry.stats().nacks_of(CDS), 1);
    assert_eq!(h.registry.stats().nacks_of(LDS), 0);
    assert_eq!(convergence(&h), 1);
    let fix = one(h.snapshot(&changed(&[(CDS, &[("a", "4")])])));
    h.delta_ack(&fix);
    assert_eq!(convergence(&h), 2);
}
