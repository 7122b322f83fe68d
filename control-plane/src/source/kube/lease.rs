//! Leader election on a `coordination.k8s.io/v1` Lease, so that one replica writes CRD
//! status (every replica serves xDS). Hand-written (about a hundred lines): the crates
//! for it track older kube releases, and the protocol is small.
//!
//! As client-go's leaderelection: the holder renews every [`LeaseConfig::renew`]; another
//! replica takes the Lease over once the record has not changed for the lease duration
//! *as observed by itself* (no trust in clocks across machines). Every write is a
//! resourceVersion-checked create or replace, so two candidates never both win. A
//! leader that fails to renew stops writing status at once.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub duration: Duration,
    pub renew: Duration,
    /// How often a follower looks at the Lease.
    pub retry: Duration,
}

impl LeaseConfig {
    pub fn new(namespace: &str, identity: &str) -> LeaseConfig {
        LeaseConfig {
            namespace: namespace.to_owned(),
            name: "amime-meshd-status".to_owned(),
            identity: identity.to_owned(),
            duration: Duration::from_secs(15),
            renew: Duration::from_secs(5),
            retry: Duration::from_secs(2),
        }
    }
}

/// The parts of a Lease that tell whether its holder is alive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub holder: Option<String>,
    pub renew_time: Option<String>,
    pub transitions: i32,
}

impl Record {
    fn of(lease: &Lease) -> Record {
        let spec = lease.spec.clone().unwrap_or_default();
        Record {
            holder: spec.holder_identity.filter(|h| !h.is_empty()),
            renew_time: spec.renew_time.map(|t| t.0.to_string()),
            transitions: spec.lease_transitions.unwrap_or(0),
        }
    }
}

/// What to do with the Lease now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Create,
    Renew,
    /// Take it over: free, or its holder stopped renewing.
    Acquire,
    Follow,
}

/// The step for `me`, given the Lease (if any) and how long its record has stayed the
/// same as this replica saw it.
pub fn step(me: &str, record: Option<&Record>, unchanged_for: Duration, duration: Duration) -> Step {
    match record {
        None => Step::Create,
        Some(r) if r.holder.as_deref() == Some(me) => Step::Renew,
        Some(r) if r.holder.is_none() || unchanged_for >= duration => Step::Acquire,
        Some(_) => Step::Follow,
    }
}

/// Campaigns for the Lease until the task is dropped; `leader` says whether we hold it.
pub async fn campaign(client: Client, config: LeaseConfig, leader: watch::Sender<bool>) {
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    let mut seen: Option<(Record, Instant)> = None;
    loop {
        let held = look(&api, &config, &mut seen).await;
        leader.send_if_modified(|l| {
            let changed = *l != held;
            if changed {
                tracing::info!(lease = %config.name, identity = %config.identity, leader = held, "status leadership");
            }
            *l = held;
            changed
        });
        tokio::time::sleep(if held { config.renew } else { config.retry }).await;
    }
}

/// One round, bounded by [`LeaseConfig::renew`]: whether we hold the Lease afterwards. The
/// bound matters: the client's own read timeout is minutes, and a leader whose renewal hangs
/// must stop believing it leads before another replica takes over (after
/// [`LeaseConfig::duration`] without a renewal), as client-go's renew deadline does.
async fn look(api: &Api<Lease>, config: &LeaseConfig, seen: &mut Option<(Record, Instant)>) -> bool {
    match tokio::time::timeout(config.renew, round(api, config, seen)).await {
        Ok(Ok(held)) => held,
        Ok(Err(e)) => {
            tracing::warn!(lease = %config.name, namespace = %config.namespace, error = %e, "leader election");
            false
        }
        Err(_) => {
            tracing::warn!(
                lease = %config.name,
                namespace = %config.namespace,
                timeout_ms = config.renew.as_millis() as u64,
                "leader election: no answer from the API server in time; not leading"
            );
            false
        }
    }
}

/// One look at the Lease; whether we hold it afterwards.
async fn round(api: &Api<Lease>, config: &LeaseConfig, seen: &mut Option<(Record, Instant)>) -> kube::Result<bool> {
    let current = api.get_opt(&config.name).await?;
    let record = current.as_ref().map(Record::of);
    let unchanged_for = match (&record, &*seen) {
        (Some(r), Some((old, since))) if r == old => since.elapsed(),
        (Some(r), _) => {
            *seen = Some((r.clone(), Instant::now()));
            Duration::ZERO
        }
        (None, _) => Duration::ZERO,
    };
    let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
    let spec = |acquire: Option<MicroTime>, transitions: i32| LeaseSpec {
        holder_identity: Some(config.identity.clone()),
        lease_duration_seconds: Some(config.duration.as_secs() as i32),
        acquire_time: acquire,
        renew_time: Some(now.clone()),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    };
    let result = match (step(&config.identity, record.as_ref(), unchanged_for, config.duration), current) {
        (Step::Follow, _) => return Ok(false),
        (Step::Create, _) => {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(config.name.clone()), ..ObjectMeta::default() },
                spec: Some(spec(Some(now.clone()), 0)),
            };
            api.create(&PostParams::default(), &lease).await
        }
        (Step::Renew, Some(mut lease)) => {
            let old = lease.spec.take().unwrap_or_default();
            lease.spec = Some(LeaseSpec { renew_time: Some(now.clone()), ..old });
            api.replace(&config.name, &PostParams::default(), &lease).await
        }
        (Step::Acquire, Some(mut lease)) => {
            let transitions = record.map_or(0, |r| r.transitions) + 1;
            lease.spec = Some(spec(Some(now.clone()), transitions));
            api.replace(&config.name, &PostParams::default(), &lease).await
        }
        (_, None) => return Ok(false),
    };
    match result {
        Ok(lease) => {
            *seen = Some((Record::of(&lease), Instant::now()));
            Ok(true)
        }
        // Someone else wrote first (resourceVersion or name conflict): not ours.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Gives the Lease up if this replica holds it (on shutdown), so that another replica takes
/// over at its next try (within [`LeaseConfig::retry`]) instead of once the lease expires.
/// Returns whether it was held. A conflict (someone changed it meanwhile) is not an error.
pub async fn release(client: Client, config: &LeaseConfig) -> kube::Result<bool> {
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    let Some(mut lease) = api.get_opt(&config.name).await? else { return Ok(false) };
    if Record::of(&lease).holder.as_deref() != Some(config.identity.as_str()) {
        return Ok(false);
    }
    let old = lease.spec.take().unwrap_or_default();
    let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
    lease.spec =
        Some(LeaseSpec { holder_identity: None, lease_duration_seconds: Some(1), renew_time: Some(now), ..old });
    match api.replace(&config.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_follow_the_record_and_what_this_replica_observed() {
        let held_by = |h: &str| Record { holder: Some(h.into()), renew_time: Some("t".into()), transitions: 0 };
        let free = Record { holder: None, renew_time: None, transitions: 3 };
        let d = Duration::from_secs(15);
        let cases = [
            (None, 0, Step::Create),
            (Some(held_by("me")), 0, Step::Renew),
            (Some(held_by("me")), 60, Step::Renew),
            (Some(held_by("other")), 0, Step::Follow),
            (Some(held_by("other")), 14, Step::Follow),
            (Some(held_by("other")), 15, Step::Acquire),
            (Some(free), 0, Step::Acquire),
        ];
        for (record, secs, want) in cases {
            assert_eq!(step("me", record.as_ref(), Duration::from_secs(secs), d), want, "{record:?} after {secs}s");
        }
    }

    /// An API server that accepts connections and never answers (a partition, a hung
    /// server): the round gives up within `renew`, so a leader stops believing it leads
    /// well before another replica may take the Lease over (after `duration`).
    #[tokio::test]
    async fn a_round_without_an_answer_ends_within_renew_and_does_not_lead() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let hold = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                open.push(socket);
            }
        });
        let client = Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
        let api: Api<Lease> = Api::namespaced(client, "mesh");
        let config = LeaseConfig { renew: Duration::from_millis(200), ..LeaseConfig::new("mesh", "me") };
        let mut seen = None;
        let held = tokio::time::timeout(Duration::from_secs(3), look(&api, &config, &mut seen)).await;
        hold.abort();
        assert_eq!(held.ok(), Some(false), "a round with no answer must end within renew and not lead");
    }
}
