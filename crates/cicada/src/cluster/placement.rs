//! Where the cluster's users go, given what each worker can take: the pure part of the master's dispatch.
//!
//! Every worker is a [`Slot`]: a weight (its cores) and, when its resource guard says it is over a limit, a cap at
//! the users it runs now, so that it gets no new users; a worker that recovered a short while ago has a ceiling at
//! the count where it struggled. [`place`] keeps the capped workers' users where they are (up to their caps), and
//! water-fills the rest of the target over the others by weight, never above a ceiling: a worker's share that a cap
//! cut goes to the workers with room. What no worker can take is `unplaced`: the cluster holds those users back
//! (spawning paused) until a worker has room again.

use crate::runner::plan::split_counts_across;

/// What one worker can take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Slot {
    /// Its weight when there is room (its cores).
    pub(crate) weight: u64,
    /// Its current share, per user type.
    pub(crate) current: Vec<u64>,
    /// How much it may run.
    pub(crate) room: Room,
}

/// How much a worker may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Room {
    /// As much as its weight gives it.
    Free,
    /// At most this many users, and no more than it has: its guard holds it (over a limit, or shedding).
    Capped(u64),
    /// At most this many users, growing up to it as its weight gives it: it struggled at this count a short while
    /// ago.
    Ceiling(u64),
}

/// Where the users go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Placement {
    /// Per worker (in the slots' order), per user type.
    pub(crate) shares: Vec<Vec<u64>>,
    /// Users of the target that no worker has room for.
    pub(crate) unplaced: u64,
}

/// Place the per-type `counts` of the cluster's target over `slots`.
pub(crate) fn place(counts: &[u64], slots: &[Slot]) -> Placement {
    let types = counts.len();
    let mut shares = vec![vec![0u64; types]; slots.len()];
    let mut left = counts.to_vec();

    // Capped workers keep what they run, up to their cap: moving users off a worker that copes costs more than it
    // saves. If the target itself shrank below what they hold, they give up users too.
    for (index, slot) in slots.iter().enumerate() {
        if let Room::Capped(cap) = slot.room {
            let mut kept = scale_to(&pad(&slot.current, types), cap);
            for (kept, left) in kept.iter_mut().zip(&mut left) {
                *kept = (*kept).min(*left);
                *left -= *kept;
            }
            shares[index] = kept;
        }
    }

    // Water-filling over the others: split what is left by weight; a worker whose part passes its ceiling is held
    // at the ceiling and leaves the rest to the others; repeat until nobody passes (at most once per worker).
    let mut open: Vec<usize> = (0..slots.len())
        .filter(|&i| !matches!(slots[i].room, Room::Capped(_)) && slots[i].weight > 0)
        .collect();
    loop {
        if open.is_empty() {
            break;
        }
        let weights: Vec<u64> = open.iter().map(|&i| slots[i].weight).collect();
        let split = split_counts_across(&left, &weights);
        let over: Vec<(usize, u64)> = open
            .iter()
            .zip(&split)
            .filter_map(|(&i, part)| match slots[i].room {
                Room::Ceiling(ceiling) if part.iter().sum::<u64>() > ceiling => Some((i, ceiling)),
                _ => None,
            })
            .collect();
        if over.is_empty() {
            for (&i, part) in open.iter().zip(split) {
                shares[i] = part;
            }
            left.iter_mut().for_each(|c| *c = 0);
            break;
        }
        for (i, ceiling) in over {
            let part = &split[open.iter().position(|&o| o == i).expect("open")];
            let held = scale_to(part, ceiling);
            for (held, left) in held.iter().zip(&mut left) {
                *left -= *held;
            }
            shares[i] = held;
            open.retain(|&o| o != i);
        }
    }
    Placement {
        shares,
        unplaced: left.iter().sum(),
    }
}

fn pad(counts: &[u64], types: usize) -> Vec<u64> {
    let mut padded = counts.to_vec();
    padded.resize(types, 0);
    padded
}

/// Shrink `counts` to at most `total` users in all, keeping the mix (largest remainders first); counts already
/// within the total are returned as they are.
fn scale_to(counts: &[u64], total: u64) -> Vec<u64> {
    let sum: u64 = counts.iter().sum();
    if sum <= total {
        return counts.to_vec();
    }
    let mut scaled: Vec<u64> = counts
        .iter()
        .map(|&c| (u128::from(c) * u128::from(total) / u128::from(sum)) as u64)
        .collect();
    let mut remainders: Vec<(u128, usize)> = counts
        .iter()
        .enumerate()
        .map(|(i, &c)| ((u128::from(c) * u128::from(total)) % u128::from(sum), i))
        .collect();
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut short = total - scaled.iter().sum::<u64>();
    for (_, i) in remainders {
        if short == 0 {
            break;
        }
        if scaled[i] < counts[i] {
            scaled[i] += 1;
            short -= 1;
        }
    }
    scaled
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn slot(weight: u64, current: &[u64], room: Room) -> Slot {
        Slot {
            weight,
            current: current.to_vec(),
            room,
        }
    }

    fn totals(placement: &Placement) -> Vec<u64> {
        placement.shares.iter().map(|s| s.iter().sum()).collect()
    }

    #[test]
    fn free_workers_split_by_weight() {
        let placed = place(
            &[60, 40],
            &[slot(2, &[], Room::Free), slot(2, &[], Room::Free)],
        );
        assert_eq!(totals(&placed), [50, 50]);
        assert_eq!(placed.unplaced, 0);
    }

    #[test]
    fn a_capped_worker_keeps_what_it_runs_and_the_rest_moves() {
        // Worker 0 ran 50 and its guard shed it down to 30: the other 70 go to worker 1.
        let placed = place(
            &[100],
            &[slot(1, &[50], Room::Capped(30)), slot(1, &[50], Room::Free)],
        );
        assert_eq!(placed.shares, [[30], [70]]);
        assert_eq!(placed.unplaced, 0);
    }

    #[test]
    fn a_capped_worker_never_grows() {
        // Capped at 80 but its share was 50: it keeps 50, it is not handed more.
        let placed = place(
            &[100],
            &[slot(1, &[50], Room::Capped(80)), slot(1, &[50], Room::Free)],
        );
        assert_eq!(placed.shares, [[50], [50]]);
    }

    #[test]
    fn with_no_room_anywhere_the_cluster_holds_the_rest() {
        let placed = place(
            &[100],
            &[
                slot(1, &[50], Room::Capped(40)),
                slot(1, &[50], Room::Capped(45)),
            ],
        );
        assert_eq!(placed.shares, [[40], [45]]);
        assert_eq!(placed.unplaced, 15);
    }

    #[test]
    fn a_ceiling_overflows_to_the_others() {
        let placed = place(
            &[90],
            &[
                slot(1, &[0], Room::Ceiling(10)),
                slot(1, &[0], Room::Free),
                slot(1, &[0], Room::Free),
            ],
        );
        assert_eq!(totals(&placed), [10, 40, 40]);
        let all_ceilings = place(&[90], &[slot(1, &[], Room::Ceiling(20))]);
        assert_eq!(all_ceilings.unplaced, 70);
    }

    #[test]
    fn a_shrinking_target_shrinks_capped_workers_too() {
        let placed = place(
            &[20],
            &[slot(1, &[50], Room::Capped(50)), slot(1, &[50], Room::Free)],
        );
        assert_eq!(placed.shares, [[20], [0]]);
    }

    #[test]
    fn scaling_keeps_the_mix() {
        assert_eq!(scale_to(&[30, 10], 20), [15, 5]);
        assert_eq!(scale_to(&[1, 1, 1], 2), [1, 1, 0]);
        assert_eq!(scale_to(&[3, 4], 100), [3, 4]);
    }

    proptest! {
        /// Whatever the rooms, every user of the target is placed once or counted as unplaced, no capped worker
        /// grows, and no worker passes its ceiling.
        #[test]
        fn every_user_is_placed_once_or_held(
            counts in proptest::collection::vec(0u64..500, 1..4),
            workers in proptest::collection::vec((0u64..8, 0u64..300, 0u8..3, 0u64..300), 0..6),
        ) {
            let types = counts.len();
            let slots: Vec<Slot> = workers
                .iter()
                .map(|&(weight, current, room, limit)| {
                    let mut per_type = vec![0; types];
                    per_type[0] = current;
                    slot(weight, &per_type, match room {
                        0 => Room::Free,
                        1 => Room::Capped(limit),
                        _ => Room::Ceiling(limit),
                    })
                })
                .collect();
            let placed = place(&counts, &slots);
            for t in 0..types {
                let given: u64 = placed.shares.iter().map(|s| s[t]).sum();
                prop_assert!(given <= counts[t]);
            }
            let given: u64 = totals(&placed).iter().sum();
            prop_assert_eq!(given + placed.unplaced, counts.iter().sum::<u64>());
            for (slot, share) in slots.iter().zip(&placed.shares) {
                let total: u64 = share.iter().sum();
                match slot.room {
                    Room::Capped(cap) => {
                        prop_assert!(total <= cap);
                        prop_assert!(total <= slot.current.iter().sum::<u64>());
                    }
                    Room::Ceiling(ceiling) => prop_assert!(total <= ceiling),
                    Room::Free => {}
                }
            }
            // Users are held back only when nobody free has room.
            let free = slots.iter().any(|s| s.room == Room::Free && s.weight > 0);
            if free {
                prop_assert_eq!(placed.unplaced, 0);
            }
        }
    }
}
