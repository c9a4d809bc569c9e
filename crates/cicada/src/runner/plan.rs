//! The runner's plan, apart from its effects: how many users of each type are wanted for a target (and under the
//! guard's cap), and which user to start or stop next so that the users alive stay a prefix of the spawn sequence
//! ([`Distribution`]). Pure bookkeeping, no tasks and no clock, so every rule is unit-tested; the runner's actor
//! carries the steps out. The same split of a count into types is what a cluster's master hands each worker.

use super::distribution::Distribution;

/// How far past twice the wanted total the spawn sequence is walked before a short type gets its users directly
/// (one longest period of the sequence).
const WALK_SLACK: u64 = 100_000;

/// What to do next to move toward the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Start a user of this type.
    Spawn(usize),
    /// Stop the newest running user among the types with a surplus ([`SpawnPlan::has_surplus`]).
    StopSurplus,
}

/// Users wanted and users alive, per type.
#[derive(Debug, Clone)]
pub(crate) struct SpawnPlan {
    distribution: Distribution,
    /// Users wanted per type (the target, under the guard's cap).
    desired: Vec<u64>,
    /// Users running per type.
    alive: Vec<u64>,
    /// Users that stopped themselves since the last start; they count toward the target so they are not respawned.
    retired: Vec<u64>,
    /// Walk along the spawn sequence: position and per-type count so far.
    cursor: (u64, Vec<u64>),
}

impl SpawnPlan {
    /// An empty plan for `type_count` user types.
    pub(crate) fn new(type_count: usize) -> SpawnPlan {
        SpawnPlan {
            distribution: Distribution::new(&[], &[]),
            desired: vec![0; type_count],
            alive: vec![0; type_count],
            retired: vec![0; type_count],
            cursor: (0, vec![0; type_count]),
        }
    }

    fn type_count(&self) -> usize {
        self.alive.len()
    }

    /// Use these types (`(weight, fixed count)`, `allowed[i]` false leaves type `i` out); returns how many users
    /// they can run at most (`u64::MAX` unless every allowed type has a fixed count).
    pub(crate) fn set_types(&mut self, specs: &[(u32, Option<u64>)], allowed: &[bool]) -> u64 {
        self.distribution = Distribution::new(specs, allowed);
        self.distribution.capacity()
    }

    /// A new test starts: users that stopped themselves in the last one may run again.
    pub(crate) fn forget_retired(&mut self) {
        self.retired.iter_mut().for_each(|r| *r = 0);
    }

    /// Want `users` in all (split by the spawn sequence).
    pub(crate) fn want(&mut self, users: u64) {
        self.desired = self.distribution.counts(users, self.type_count());
        self.reset_cursor();
    }

    /// Want exactly these users per type (a cluster worker's share).
    pub(crate) fn want_counts(&mut self, counts: &[u64]) {
        let mut desired = counts.to_vec();
        desired.resize(self.type_count(), 0);
        self.desired = desired;
        self.reset_cursor();
    }

    fn reset_cursor(&mut self) {
        self.cursor = (0, vec![0; self.type_count()]);
    }

    fn counted(&self, type_index: usize) -> u64 {
        self.alive[type_index] + self.retired[type_index]
    }

    /// Users running per type.
    pub(crate) fn alive(&self) -> &[u64] {
        &self.alive
    }

    /// More users of this type run than are wanted.
    pub(crate) fn has_surplus(&self, type_index: usize) -> bool {
        self.alive[type_index] > 0 && self.counted(type_index) > self.desired[type_index]
    }

    /// Every type has what it wants (or more than it wants with none left to stop).
    pub(crate) fn reconciled(&self) -> bool {
        (0..self.type_count()).all(|t| {
            self.counted(t) == self.desired[t]
                || (self.counted(t) > self.desired[t] && self.alive[t] == 0)
        })
    }

    /// The next step toward the plan: surplus users are stopped before missing ones are started, so a reshaped
    /// mix never overshoots. `None` when there is nothing to do.
    pub(crate) fn next_step(&mut self, spawning_allowed: bool) -> Option<Step> {
        if (0..self.type_count()).any(|t| self.has_surplus(t)) {
            return Some(Step::StopSurplus);
        }
        if !spawning_allowed {
            return None;
        }
        // Along the spawn sequence, each type's next user is the next one of its kind in the sequence. A share set
        // by a cluster master need not be a prefix of the sequence (its mix may differ by a user or two), so the
        // walk may go past the total, within a bound, and a type still short after it gets its users directly.
        let wanted: u64 = self.desired.iter().sum();
        let bound = wanted.saturating_mul(2).saturating_add(WALK_SLACK);
        let (position, walked) = &mut self.cursor;
        while *position < bound {
            let Some(type_index) = self.distribution.type_at(*position) else {
                break;
            };
            *position += 1;
            walked[type_index] += 1;
            let counted = self.alive[type_index] + self.retired[type_index];
            if walked[type_index] > counted && counted < self.desired[type_index] {
                return Some(Step::Spawn(type_index));
            }
        }
        (0..self.type_count())
            .find(|&t| self.counted(t) < self.desired[t])
            .map(Step::Spawn)
    }

    /// A user of this type was started.
    pub(crate) fn spawned(&mut self, type_index: usize) {
        self.alive[type_index] += 1;
    }

    /// A user of this type was stopped by the plan (it no longer counts).
    pub(crate) fn stopped(&mut self, type_index: usize) {
        self.alive[type_index] -= 1;
        self.reset_cursor();
    }

    /// A user of this type ended by itself (`stop_user()`): it still counts toward the target.
    pub(crate) fn retired(&mut self, type_index: usize) {
        self.alive[type_index] -= 1;
        self.retired[type_index] += 1;
    }

    /// Every user stopped at once (a stopped test).
    pub(crate) fn all_stopped(&mut self) {
        self.alive.iter_mut().for_each(|a| *a = 0);
        self.reset_cursor();
    }
}

/// Split `users` across workers by `shares` (one weight per worker, e.g. its cores or headroom), deterministically:
/// the user types' counts for `users` (as the spawn sequence gives them) are split type by type in proportion to the
/// shares, and each type's remainder goes to the workers furthest below their share of the total so far, so every
/// worker's total is within one user of its share and its mix as close to the whole's as its count allows; a
/// fixed-count type's users are placed once in the whole cluster. Returns per worker, per type counts. Workers with
/// weight 0 get nothing; with no weight at all, nobody gets anything.
#[cfg(test)]
pub(crate) fn split_across(
    specs: &[(u32, Option<u64>)],
    users: u64,
    shares: &[u64],
) -> Vec<Vec<u64>> {
    let distribution = Distribution::new(specs, &vec![true; specs.len()]);
    let counts = distribution.counts(users.min(distribution.capacity()), specs.len());
    split_counts_across(&counts, shares)
}

/// Split given per-type `counts` across workers by `shares`, as [`split_across`] does once it knows the counts.
pub(crate) fn split_counts_across(counts: &[u64], shares: &[u64]) -> Vec<Vec<u64>> {
    let type_count = counts.len();
    let mut out = vec![vec![0u64; type_count]; shares.len()];
    let total_share: u128 = shares.iter().map(|&s| u128::from(s)).sum();
    if total_share == 0 {
        return out;
    }
    let mut given = vec![0u128; shares.len()];
    let mut placed: u128 = 0;
    for (type_index, &count) in counts.iter().enumerate() {
        let count = u128::from(count);
        let mut left = count;
        for (worker, &share) in shares.iter().enumerate() {
            let base = count * u128::from(share) / total_share;
            out[worker][type_index] += base as u64;
            given[worker] += base;
            left -= base;
        }
        placed += count;
        // Remainders to whoever is furthest below its share of everything placed so far (ties: lowest index).
        for _ in 0..left {
            let worker = (0..shares.len())
                .filter(|&w| shares[w] > 0)
                .max_by_key(|&w| {
                    let ideal = placed * u128::from(shares[w]);
                    let actual = given[w] * total_share;
                    (ideal as i128 - actual as i128, std::cmp::Reverse(w))
                })
                .expect("a worker with a share");
            out[worker][type_index] += 1;
            given[worker] += 1;
        }
    }
    out
}

/// The cluster's per-type counts for `users`, as the spawn sequence gives them.
pub(crate) fn type_counts(specs: &[(u32, Option<u64>)], users: u64) -> Vec<u64> {
    let distribution = Distribution::new(specs, &vec![true; specs.len()]);
    distribution.counts(users.min(distribution.capacity()), specs.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Carry the plan out like the runner does, with `order` the types of the users alive, oldest first.
    fn drive_users(
        plan: &mut SpawnPlan,
        order: &mut Vec<usize>,
        spawning_allowed: bool,
    ) -> Vec<Step> {
        let mut steps = Vec::new();
        while let Some(step) = plan.next_step(spawning_allowed) {
            match step {
                Step::Spawn(t) => {
                    plan.spawned(t);
                    order.push(t);
                }
                Step::StopSurplus => {
                    let index = order.iter().rposition(|&t| plan.has_surplus(t)).unwrap();
                    plan.stopped(order.remove(index));
                }
            }
            steps.push(step);
        }
        steps
    }

    fn drive(plan: &mut SpawnPlan, spawning_allowed: bool) -> Vec<Step> {
        let mut order: Vec<usize> = plan
            .alive()
            .iter()
            .enumerate()
            .flat_map(|(t, n)| std::iter::repeat_n(t, *n as usize))
            .collect();
        drive_users(plan, &mut order, spawning_allowed)
    }

    #[test]
    fn ramps_up_along_the_sequence_and_down_newest_type_first() {
        let mut plan = SpawnPlan::new(2);
        plan.set_types(&[(3, None), (1, None)], &[true, true]);
        plan.want(8);
        let mut order = Vec::new();
        let steps = drive_users(&mut plan, &mut order, true);
        assert_eq!(steps.len(), 8);
        assert_eq!(plan.alive(), [6, 2]);
        assert_eq!(order, [0, 0, 1, 0, 0, 0, 1, 0], "A A B A, twice");
        assert!(plan.reconciled());
        plan.want(4);
        let steps = drive_users(&mut plan, &mut order, true);
        assert!(steps.iter().all(|s| *s == Step::StopSurplus), "{steps:?}");
        assert_eq!(plan.alive(), [3, 1]);
        assert_eq!(
            order,
            [0, 0, 1, 0],
            "the newest stopped first: a prefix of the sequence is left"
        );
    }

    #[test]
    fn spawning_paused_still_stops_surplus() {
        let mut plan = SpawnPlan::new(1);
        plan.set_types(&[(1, None)], &[true]);
        plan.want(5);
        assert!(drive(&mut plan, false).is_empty(), "paused: nothing starts");
        assert!(!plan.reconciled());
        drive(&mut plan, true);
        plan.want(2);
        assert_eq!(drive(&mut plan, false), [Step::StopSurplus; 3]);
    }

    #[test]
    fn retired_users_count_toward_the_target_until_a_new_test() {
        let mut plan = SpawnPlan::new(1);
        plan.set_types(&[(1, None)], &[true]);
        plan.want(3);
        drive(&mut plan, true);
        plan.retired(0);
        assert!(
            plan.reconciled(),
            "a user that stopped itself is not respawned"
        );
        assert_eq!(plan.alive(), [2]);
        plan.forget_retired();
        plan.want(3);
        assert_eq!(drive(&mut plan, true), [Step::Spawn(0)]);
    }

    #[test]
    fn a_share_that_is_not_a_prefix_of_the_sequence_is_reached_and_stays() {
        let mut plan = SpawnPlan::new(2);
        plan.set_types(&[(3, None), (1, None)], &[true, true]);
        // 25 users of a 3:1 mix as a master may split them: 19 and 6 (the sequence's prefix has 19 and 6 or 18
        // and 7, depending on where it stops).
        for counts in [[19, 6], [18, 7], [20, 5], [0, 4]] {
            plan.want_counts(&counts);
            drive(&mut plan, true);
            assert_eq!(plan.alive(), counts);
            assert!(plan.reconciled());
            assert_eq!(plan.next_step(true), None, "nothing flips back and forth");
        }
    }

    #[test]
    fn fixed_counts_cap_the_capacity() {
        let mut plan = SpawnPlan::new(2);
        let capacity = plan.set_types(&[(1, Some(2)), (1, Some(3))], &[true, true]);
        assert_eq!(capacity, 5);
        let capacity = plan.set_types(&[(1, Some(2)), (1, None)], &[true, true]);
        assert_eq!(capacity, u64::MAX);
    }

    #[test]
    fn split_across_workers_is_even_deterministic_and_keeps_the_mix() {
        let specs = [(3, None), (1, None)];
        let split = split_across(&specs, 100, &[1, 1, 1, 1]);
        let totals: Vec<u64> = split.iter().map(|w| w.iter().sum()).collect();
        assert_eq!(totals, [25, 25, 25, 25]);
        for worker in &split {
            assert!(worker[0] >= 18 && worker[0] <= 19, "{split:?}");
        }
        // One more user moves only a few (remainders may shift between workers, never whole shares).
        let more = split_across(&specs, 101, &[1, 1, 1, 1]);
        let moved: u64 = more
            .iter()
            .zip(&split)
            .flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| x.abs_diff(*y)))
            .sum();
        assert!(moved <= 3, "{split:?} -> {more:?}");
        assert_eq!(split, split_across(&specs, 100, &[1, 1, 1, 1]));
        let by_type: Vec<u64> = (0..2).map(|t| split.iter().map(|w| w[t]).sum()).collect();
        assert_eq!(by_type, [75, 25], "the whole keeps the mix");
    }

    #[test]
    fn split_follows_the_shares_and_places_fixed_counts_once() {
        let split = split_across(&[(1, Some(1)), (1, None)], 31, &[2, 1, 0]);
        assert_eq!(split[2], [0, 0], "no share, no users");
        let fixed: u64 = split.iter().map(|w| w[0]).sum();
        assert_eq!(
            fixed, 1,
            "a fixed-count user runs once in the whole cluster"
        );
        let totals: Vec<u64> = split.iter().map(|w| w.iter().sum()).collect();
        assert_eq!(totals, [21, 10, 0]);
        assert_eq!(split_across(&[(1, None)], 10, &[0, 0]), [[0], [0]]);
    }
}
