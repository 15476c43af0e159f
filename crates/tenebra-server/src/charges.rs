//! What an ended task is charged: the one rule, next to the catalogue that prices it.
//!
//! A task's price is its cost in CU (from [`crate::catalogue::resolve_priced`]) times the
//! plan's price per CU. When it ends, the store meters it by [`charge`]:
//! - a success pays its whole cost;
//! - a task that stopped early (cancelled, or failed by the tenant's input) pays for the part
//!   that ran, `cost × done / total` of its progress, rounded down;
//! - a task that failed by our fault (a worker lost, retries used up on our side) pays
//!   nothing, though the CU that ran are recorded.

use tenebra_store::{Charge, Task, TaskStatus, INTERNAL, WORKER_LOST};

/// Error codes that are ours, not the tenant's.
const OUR_FAULTS: [&str; 2] = [INTERNAL, WORKER_LOST];

/// The charge of the ended task `t`.
pub fn charge(t: &Task) -> Charge {
    let cu = match t.status {
        TaskStatus::Succeeded => t.cost_cu,
        _ if t.progress_total > 0 => {
            let done = t.progress_done.clamp(0, t.progress_total);
            let part = i128::from(t.cost_cu) * i128::from(done) / i128::from(t.progress_total);
            i64::try_from(part).unwrap_or(t.cost_cu)
        }
        _ => 0,
    };
    let ours = t
        .error_code
        .as_deref()
        .is_some_and(|c| OUR_FAULTS.contains(&c));
    Charge {
        cu,
        charged_cu: if ours { 0 } else { cu },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(status: TaskStatus, code: Option<&str>, done: i64, total: i64) -> Task {
        Task {
            status,
            error_code: code.map(str::to_owned),
            cost_cu: 1000,
            progress_done: done,
            progress_total: total,
            ..Task::default()
        }
    }

    fn of(t: &Task) -> (i64, i64) {
        let c = charge(t);
        (c.cu, c.charged_cu)
    }

    #[test]
    fn success_pays_in_full_whatever_the_progress() {
        assert_eq!(of(&ended(TaskStatus::Succeeded, None, 0, 0)), (1000, 1000));
        assert_eq!(of(&ended(TaskStatus::Succeeded, None, 3, 7)), (1000, 1000));
    }

    #[test]
    fn a_stopped_task_pays_for_the_part_that_ran() {
        assert_eq!(of(&ended(TaskStatus::Cancelled, None, 1, 3)), (333, 333));
        assert_eq!(of(&ended(TaskStatus::Cancelled, None, 0, 3)), (0, 0));
        assert_eq!(of(&ended(TaskStatus::Cancelled, None, 0, 0)), (0, 0));
        let bad_input = ended(TaskStatus::Failed, Some("invalid_input"), 2, 4);
        assert_eq!(of(&bad_input), (500, 500));
    }

    #[test]
    fn progress_a_worker_overstates_charges_no_more_than_the_cost() {
        assert_eq!(of(&ended(TaskStatus::Cancelled, None, 99, 3)), (1000, 1000));
        assert_eq!(of(&ended(TaskStatus::Cancelled, None, -5, 3)), (0, 0));
        let huge = Task {
            cost_cu: i64::MAX,
            ..ended(TaskStatus::Cancelled, None, i64::MAX - 1, i64::MAX)
        };
        assert_eq!(of(&huge).0, i64::MAX - 1);
    }

    #[test]
    fn our_failures_are_recorded_but_not_charged() {
        for code in [INTERNAL, WORKER_LOST] {
            assert_eq!(of(&ended(TaskStatus::Failed, Some(code), 2, 4)), (500, 0));
        }
    }
}
