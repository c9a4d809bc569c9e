//! Which user type the n-th spawned user has: the same answer every time.
//!
//! Users are spawned along one fixed sequence: first every fixed-count user (in registration order), then the
//! weighted types interleaved by smooth weighted round-robin (weights 3:1 give A A B A, A A B A ...). The users alive
//! at any moment are a prefix of that sequence, so ramping down by stopping the newest users keeps the mix right at
//! every count.

/// The spawn sequence of a set of user types.
#[derive(Debug, Clone)]
pub(crate) struct Distribution {
    /// (type index, count) of fixed-count types, spawned first.
    fixed: Vec<(usize, u64)>,
    fixed_total: u64,
    /// One period of the interleaved weighted types.
    period: Vec<usize>,
    /// How often each type appears in one period.
    period_counts: Vec<u64>,
}

/// Longest period kept; weights whose sum exceeds it are scaled down (the mix stays within one part in this many).
const MAX_PERIOD: u64 = 100_000;

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl Distribution {
    /// `types[i]` is (weight, fixed count) of type `i`; `allowed[i]` false leaves a type out.
    pub(crate) fn new(types: &[(u32, Option<u64>)], allowed: &[bool]) -> Self {
        let type_count = types.len();
        let mut fixed = Vec::new();
        let mut weights = vec![0u64; type_count];
        for (index, (weight, fixed_count)) in types.iter().enumerate() {
            if !allowed.get(index).copied().unwrap_or(true) {
                continue;
            }
            match fixed_count {
                Some(count) => fixed.push((index, *count)),
                None => weights[index] = u64::from(*weight),
            }
        }
        let divisor = weights
            .iter()
            .copied()
            .filter(|w| *w > 0)
            .fold(0, gcd)
            .max(1);
        weights.iter_mut().for_each(|w| *w /= divisor);
        let sum: u64 = weights.iter().sum();
        if sum > MAX_PERIOD {
            weights.iter_mut().for_each(|w| {
                *w = if *w == 0 {
                    0
                } else {
                    (*w * MAX_PERIOD / sum).max(1)
                }
            });
        }
        let sum: u64 = weights.iter().sum();
        let mut period = Vec::with_capacity(sum as usize);
        let mut current = vec![0i128; type_count];
        for _ in 0..sum {
            for (index, weight) in weights.iter().enumerate() {
                current[index] += i128::from(*weight);
            }
            let mut best = None;
            for (index, weight) in weights.iter().enumerate() {
                if *weight > 0 && best.is_none_or(|b: usize| current[index] > current[b]) {
                    best = Some(index);
                }
            }
            if let Some(best) = best {
                current[best] -= i128::from(sum);
                period.push(best);
            }
        }
        let mut period_counts = vec![0u64; type_count];
        for index in &period {
            period_counts[*index] += 1;
        }
        Distribution {
            fixed_total: fixed.iter().map(|(_, count)| count).sum(),
            fixed,
            period,
            period_counts,
        }
    }

    /// Type of the user at `position` in the sequence; `None` past the end (only fixed types, all spawned).
    pub(crate) fn type_at(&self, position: u64) -> Option<usize> {
        if position < self.fixed_total {
            let mut remaining = position;
            for (index, count) in &self.fixed {
                if remaining < *count {
                    return Some(*index);
                }
                remaining -= count;
            }
        }
        if self.period.is_empty() {
            return None;
        }
        let offset = position - self.fixed_total;
        Some(self.period[(offset % self.period.len() as u64) as usize])
    }

    /// How many users of each type the first `users` of the sequence hold.
    pub(crate) fn counts(&self, users: u64, type_count: usize) -> Vec<u64> {
        let mut counts = vec![0u64; type_count];
        let mut remaining = users;
        for (index, count) in &self.fixed {
            let take = remaining.min(*count);
            counts[*index] += take;
            remaining -= take;
        }
        if remaining == 0 || self.period.is_empty() {
            return counts;
        }
        let period = self.period.len() as u64;
        let full = remaining / period;
        for (index, per_period) in self.period_counts.iter().enumerate() {
            counts[index] += full * per_period;
        }
        for index in &self.period[..(remaining % period) as usize] {
            counts[*index] += 1;
        }
        counts
    }

    /// The most users this sequence can hold (`u64::MAX` when a weighted type exists).
    pub(crate) fn capacity(&self) -> u64 {
        if self.period.is_empty() {
            self.fixed_total
        } else {
            u64::MAX
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_interleave_smoothly() {
        let distribution = Distribution::new(&[(3, None), (1, None)], &[true, true]);
        let sequence: Vec<_> = (0..8).filter_map(|p| distribution.type_at(p)).collect();
        assert_eq!(sequence, [0, 0, 1, 0, 0, 0, 1, 0]);
        assert_eq!(distribution.counts(10, 2), vec![8, 2]);
        assert_eq!(distribution.counts(3, 2), vec![2, 1]);
    }

    #[test]
    fn prefixes_match_counts() {
        let distribution =
            Distribution::new(&[(5, None), (2, Some(3)), (7, None), (1, None)], &[true; 4]);
        for users in 0..200 {
            let mut counted = vec![0u64; 4];
            for position in 0..users {
                counted[distribution.type_at(position).unwrap()] += 1;
            }
            assert_eq!(counted, distribution.counts(users, 4), "at {users} users");
        }
        assert_eq!(
            distribution.counts(2, 4),
            vec![0, 2, 0, 0],
            "fixed counts come first"
        );
    }

    #[test]
    fn only_fixed_types_have_a_capacity() {
        let distribution = Distribution::new(&[(1, Some(2)), (1, Some(1))], &[true, true]);
        assert_eq!(distribution.capacity(), 3);
        assert_eq!(distribution.type_at(3), None);
        assert_eq!(distribution.counts(10, 2), vec![2, 1]);
        let filtered = Distribution::new(&[(1, None), (4, None)], &[false, true]);
        assert_eq!(filtered.counts(5, 2), vec![0, 5]);
    }

    #[test]
    fn huge_weights_are_scaled() {
        let distribution = Distribution::new(&[(1_000_000, None), (999_999, None)], &[true, true]);
        let counts = distribution.counts(1000, 2);
        assert!(counts[0].abs_diff(counts[1]) <= 2, "{counts:?}");
    }
}
