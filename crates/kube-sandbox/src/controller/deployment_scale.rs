//! How the Deployment controller sizes its ReplicaSets (`pkg/controller/deployment/
//! rolling.go` and `sync.go` `scale`): a rolling update scales the new ReplicaSet up within
//! `maxSurge` and the old ones down as far as `maxUnavailable` allows, counting only
//! available pods; a scaling event (or a paused Deployment) spreads a change of
//! `spec.replicas` over the active ReplicaSets in proportion to their size.

use std::cmp::Ordering;

use serde_json::Value;

use super::deployment::{Ctx, new_rs_replicas};
use super::objects::{int, name_of};
use super::revision as rev;
use crate::store::meta_str;

fn by_creation(a: &Value, b: &Value) -> Ordering {
    (meta_str(a, "creationTimestamp"), name_of(a))
        .cmp(&(meta_str(b, "creationTimestamp"), name_of(b)))
}

fn spec(rs: &Value) -> i64 {
    int(rs, "/spec/replicas")
}

fn available(rss: &[Value]) -> i64 {
    rss.iter()
        .map(|rs| int(rs, "/status/availableReplicas"))
        .sum()
}

impl Ctx<'_> {
    /// `reconcileNewReplicaSet`: whether the new ReplicaSet was scaled.
    pub fn reconcile_new(&self, all: &[Value], new_rs: &Value) -> Result<bool, String> {
        let want = self.replicas();
        let n = match spec(new_rs) {
            cur if cur == want => return Ok(false),
            cur if cur > want => want,
            cur => new_rs_replicas(&self.dep, all, cur),
        };
        Ok(self.scale_and_record(new_rs, n)?.0)
    }

    /// `reconcileOldReplicaSets`: whether an old ReplicaSet was scaled down, keeping
    /// `replicas - maxUnavailable` pods available, unhealthy ones going first.
    pub fn reconcile_old(
        &self,
        all: &[Value],
        mut old: Vec<Value>,
        new_rs: &Value,
    ) -> Result<bool, String> {
        let old_pods: i64 = old.iter().map(spec).sum();
        if old_pods == 0 {
            return Ok(false);
        }
        let all_pods: i64 = all.iter().map(spec).sum();
        let want = self.replicas();
        let min_available = want - rev::max_unavailable(&self.dep, want);
        let new_unavailable = spec(new_rs) - int(new_rs, "/status/availableReplicas");
        let max_scaled_down = all_pods - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(false);
        }
        let cleaned = self.cleanup_unhealthy(&mut old, max_scaled_down)?;
        let mut all: Vec<Value> = old.clone();
        all.push(new_rs.clone());
        let scaled = self.scale_down_old_rolling(&all, &mut old, min_available)?;
        Ok(cleaned + scaled > 0)
    }

    /// `cleanupUnhealthyReplicas`: scale old ReplicaSets down by their unavailable pods.
    fn cleanup_unhealthy(&self, old: &mut [Value], max_cleanup: i64) -> Result<i64, String> {
        old.sort_by(by_creation);
        let mut total = 0;
        for rs in old.iter_mut() {
            if total >= max_cleanup {
                break;
            }
            let unhealthy = spec(rs) - int(rs, "/status/availableReplicas");
            if spec(rs) == 0 || unhealthy <= 0 {
                continue;
            }
            let down = (max_cleanup - total).min(unhealthy);
            let (_, stored) = self.scale_and_record(rs, spec(rs) - down)?;
            *rs = stored;
            total += down;
        }
        Ok(total)
    }

    /// `scaleDownOldReplicaSetsForRollingUpdate`: available pods above the minimum go,
    /// oldest ReplicaSet first.
    fn scale_down_old_rolling(
        &self,
        all: &[Value],
        old: &mut [Value],
        min_available: i64,
    ) -> Result<i64, String> {
        let avail = available(all);
        if avail <= min_available {
            return Ok(0);
        }
        old.sort_by(by_creation);
        let target = avail - min_available;
        let mut total = 0;
        for rs in old.iter() {
            if total >= target {
                break;
            }
            if spec(rs) == 0 {
                continue;
            }
            let down = spec(rs).min(target - total);
            self.scale_and_record(rs, spec(rs) - down)?;
            total += down;
        }
        Ok(total)
    }

    /// `scale`: a paused Deployment or a scaling event.
    pub fn scale(&self, new_rs: Option<&Value>, old: &[Value]) -> Result<(), String> {
        let want = self.replicas();
        let mut old_newest_first = old.to_vec();
        old_newest_first.sort_by(|a, b| by_creation(b, a));
        let mut all: Vec<Value> = old_newest_first.clone();
        all.extend(new_rs.cloned());
        let actives: Vec<Value> = all.iter().filter(|rs| spec(rs) > 0).cloned().collect();
        // FindActiveOrLatest: the one active ReplicaSet, or the newest if none is.
        let single = match actives.len() {
            0 => new_rs
                .cloned()
                .or_else(|| old_newest_first.first().cloned()),
            1 => Some(actives[0].clone()),
            _ => None,
        };
        if let Some(rs) = single {
            self.scale_and_record(&rs, want)?;
            return Ok(());
        }
        if let Some(n) = new_rs
            && saturated(n, want)
        {
            for rs in old.iter().filter(|rs| spec(rs) > 0) {
                self.scale_and_record(rs, 0)?;
            }
            return Ok(());
        }
        if self
            .dep
            .pointer("/spec/strategy/type")
            .and_then(Value::as_str)
            == Some("Recreate")
        {
            return Ok(());
        }
        let total: i64 = actives.iter().map(spec).sum();
        let surge = rev::max_surge(&self.dep, want);
        let allowed = if want > 0 { want + surge } else { 0 };
        let to_add = allowed - total;
        let mut sorted = actives;
        // ReplicaSetsBySizeNewer to scale up, ReplicaSetsBySizeOlder to scale down.
        sorted.sort_by(|a, b| {
            spec(b).cmp(&spec(a)).then_with(|| {
                if to_add > 0 {
                    by_creation(b, a)
                } else {
                    by_creation(a, b)
                }
            })
        });
        let status_replicas = int(&self.dep, "/status/replicas");
        let mut added = 0;
        let mut sizes: Vec<i64> = Vec::new();
        for rs in &sorted {
            let p = if to_add != 0 {
                proportion(rs, want, surge, status_replicas, to_add, added)
            } else {
                0
            };
            sizes.push(spec(rs) + p);
            added += p;
        }
        for (i, rs) in sorted.iter().enumerate() {
            if i == 0 && to_add != 0 {
                sizes[0] = (sizes[0] + to_add - added).max(0);
            }
            self.scale_rs(rs, sizes[i])?;
        }
        Ok(())
    }
}

/// `IsSaturated`: the new ReplicaSet has, wants and runs available every replica.
fn saturated(rs: &Value, want: i64) -> bool {
    let desired = rs
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(rev::DESIRED_REPLICAS))
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<i64>().ok());
    spec(rs) == want && desired == Some(want) && int(rs, "/status/availableReplicas") == want
}

/// `GetProportion` and `getReplicaSetFraction`: this ReplicaSet's share of `to_add`, from
/// its size relative to the `max-replicas` it was last sized for.
fn proportion(
    rs: &Value,
    want: i64,
    surge: i64,
    status_replicas: i64,
    to_add: i64,
    added: i64,
) -> i64 {
    if spec(rs) == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = if want == 0 {
        -spec(rs)
    } else {
        let annotated = rs
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(rev::MAX_REPLICAS))
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<i64>().ok())
            .unwrap_or(status_replicas);
        if annotated == 0 {
            0
        } else {
            let size = (spec(rs) * (want + surge)) as f64 / annotated as f64;
            size.round() as i64 - spec(rs)
        }
    };
    let allowed = to_add - added;
    if to_add > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    }
}
