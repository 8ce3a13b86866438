//! Secondary suppression: complementary cell suppression over the sums the statistics obey.
//!
//! Every count from 1 up to the threshold is hidden (primary suppression). A reader can add and
//! subtract shown counts along the sums the tables obey (the flows add up to the totals of the
//! kinds, the days of a week to the week, the months to the period), so one hidden count in a
//! sum whose other terms are shown is the difference. After the primary cells, more cells are
//! hidden (complementary cells, shown as "x", never as "<5": they are not small) until no hidden
//! count follows from the shown counts and the sums. "Follows" is decided by linear algebra: a
//! hidden cell is determined when its unit vector lies in the row space of the sums restricted
//! to the hidden cells (reduced row echelon form: its pivot row has no other entry).
//!
//! Complements are chosen in the sums that give a hidden cell away (where it is the only hidden
//! cell), one that closes the most of them first; where a cell is given away only through a longer
//! chain of sums, among the shown counts linked to it. Above zero first, the smallest that with
//! the small count makes at least twice the threshold less one (so the pair's total leaves the
//! small count its whole range 1..threshold), else the largest; zeros last. The smallest that
//! serves hides the least, so the period's totals are the last to go.

/// Whether a count is shown, hidden because it is small, or hidden to protect one that is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hide {
    Shown,
    Small,
    Complement,
}

/// A sum the tables obey: the cells with their coefficients add up to zero.
pub type Sum = Vec<(usize, i32)>;

/// Which cells to hide: the small ones, then complements until no hidden cell follows from the
/// rest and `sums`.
pub fn suppress(values: &[u64], sums: &[Sum], threshold: u32) -> Vec<Hide> {
    let t = u64::from(threshold);
    let mut hide: Vec<Hide> = values
        .iter()
        .map(|&v| {
            if v > 0 && v < t {
                Hide::Small
            } else {
                Hide::Shown
            }
        })
        .collect();
    // Each round hides at least one more cell while any hidden one is determined, so it ends.
    loop {
        let determined = determined(&hide, sums);
        if determined.is_empty() {
            return hide;
        }
        let mut hid_any = false;
        for &cell in &determined {
            if hide_complement(cell, values, &mut hide, sums, t) {
                hid_any = true;
            }
        }
        if !hid_any {
            // Every determined cell already had a second hidden cell in each of its sums: the
            // determination comes through a longer chain. Of the cells linked to the first one,
            // hide the first (in order of preference) that leaves it undetermined: hiding
            // another count of the same chain would leave the chain as tight as it was.
            let target = determined[0];
            let mut chain = linked(target, &hide, sums);
            let room = room(values[target], t);
            chain.sort_by_key(|&c| preference(values[c], room));
            let frees = |c: usize, hide: &mut Vec<Hide>| {
                hide[c] = Hide::Complement;
                let freed = !self::determined(hide, sums).contains(&target);
                hide[c] = Hide::Shown;
                freed
            };
            let pick = chain
                .iter()
                .take(MAX_TRIALS)
                .copied()
                .find(|&c| frees(c, &mut hide))
                .or(chain.first().copied());
            match pick {
                Some(c) => hide[c] = Hide::Complement,
                None => return hide,
            }
        }
    }
}

/// How many complements are tried for a cell given away through a chain of sums before the
/// first in order of preference is taken anyway.
const MAX_TRIALS: usize = 40;

/// Hides one more cell beside `cell`: a shown cell in a sum where `cell` is the only hidden one
/// (one that closes the most such sums first); above zero first (the smallest that leaves a small count its whole range beside it, else the
/// largest), zeros last. Returns whether a cell was hidden.
fn hide_complement(cell: usize, values: &[u64], hide: &mut [Hide], sums: &[Sum], t: u64) -> bool {
    let with_cell = || sums.iter().filter(|s| s.iter().any(|(c, _)| *c == cell));
    // The sums that give the cell away: those where it is the only hidden one. A complement
    // from one of them (one in more of them first) closes them; one from elsewhere would not.
    let lonely: Vec<&Sum> = with_cell()
        .filter(|s| s.iter().filter(|(c, _)| hide[*c] != Hide::Shown).count() == 1)
        .collect();
    let room = room(values[cell], t);
    if lonely.is_empty() {
        // Each of its sums has another hidden cell already (one hidden this round, perhaps):
        // the determination comes through a longer chain, which the caller handles.
        return false;
    }
    let mut candidates: Vec<usize> = lonely
        .iter()
        .flat_map(|s| s.iter().map(|(c, _)| *c))
        .filter(|c| hide[*c] == Hide::Shown)
        .collect();
    candidates.sort_unstable();
    candidates.dedup();
    let closes = |c: usize| {
        lonely
            .iter()
            .filter(|s| s.iter().any(|(x, _)| *x == c))
            .count()
    };
    candidates.sort_by_key(|&c| (std::cmp::Reverse(closes(c)), preference(values[c], room)));
    match candidates.first() {
        Some(&c) => {
            hide[c] = Hide::Complement;
            true
        }
        None => false,
    }
}

/// Enough room: with a complement of at least this, the small count's whole range 1..t-1 stays
/// possible even to a reader who knows a complement is at least t.
fn room(small: u64, t: u64) -> u64 {
    (2 * t - 1).saturating_sub(small).max(t)
}

/// The order complements are chosen in (lowest first): the smallest count that leaves room,
/// else the largest below it, zeros last. The smallest that serves hides the least: a total of
/// the period is the last a coordinator should lose.
fn preference(v: u64, room: u64) -> (u8, u64) {
    match v {
        0 => (3, 0),
        v if v >= room => (0, v),
        v => (1, u64::MAX - v),
    }
}

/// The shown cells in the sums reachable from `cell` through hidden cells.
fn linked(cell: usize, hide: &[Hide], sums: &[Sum]) -> Vec<usize> {
    let mut seen_cells = std::collections::BTreeSet::from([cell]);
    let mut seen_sums = vec![false; sums.len()];
    let mut frontier = vec![cell];
    let mut shown = std::collections::BTreeSet::new();
    while let Some(c) = frontier.pop() {
        for (i, s) in sums.iter().enumerate() {
            if seen_sums[i] || !s.iter().any(|(x, _)| *x == c) {
                continue;
            }
            seen_sums[i] = true;
            for (x, _) in s {
                if hide[*x] == Hide::Shown {
                    shown.insert(*x);
                } else if seen_cells.insert(*x) {
                    frontier.push(*x);
                }
            }
        }
    }
    shown.into_iter().collect()
}

/// The hidden cells whose value follows from the shown ones and `sums`.
pub fn determined(hide: &[Hide], sums: &[Sum]) -> Vec<usize> {
    let hidden: Vec<usize> = (0..hide.len())
        .filter(|&c| hide[c] != Hide::Shown)
        .collect();
    if hidden.is_empty() {
        return Vec::new();
    }
    let column: std::collections::HashMap<usize, usize> =
        hidden.iter().enumerate().map(|(j, &c)| (c, j)).collect();
    let mut rows: Vec<Vec<f64>> = sums
        .iter()
        .map(|s| {
            let mut row = vec![0.0; hidden.len()];
            for (c, k) in s {
                if let Some(&j) = column.get(c) {
                    row[j] += f64::from(*k);
                }
            }
            row
        })
        .filter(|row| row.iter().any(|x| *x != 0.0))
        .collect();
    const EPS: f64 = 1e-9;
    // Reduced row echelon form, partial pivoting.
    let mut pivots = Vec::new();
    let mut r = 0;
    for j in 0..hidden.len() {
        if r == rows.len() {
            break;
        }
        let Some(p) =
            (r..rows.len()).max_by(|&a, &b| rows[a][j].abs().total_cmp(&rows[b][j].abs()))
        else {
            break;
        };
        if rows[p][j].abs() < EPS {
            continue;
        }
        rows.swap(r, p);
        let lead = rows[r][j];
        for x in rows[r].iter_mut() {
            *x /= lead;
        }
        let pivot_row = rows[r].clone();
        for (i, row) in rows.iter_mut().enumerate() {
            if i != r && row[j].abs() >= EPS {
                let f = row[j];
                for (x, y) in row.iter_mut().zip(&pivot_row) {
                    *x -= f * y;
                }
            }
        }
        pivots.push((r, j));
        r += 1;
    }
    pivots
        .into_iter()
        .filter(|&(r, j)| {
            rows[r]
                .iter()
                .enumerate()
                .all(|(k, x)| k == j || x.abs() < EPS)
        })
        .map(|(_, j)| hidden[j])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_small_count_in_a_sum_gets_a_complement_that_leaves_it_its_range() {
        // 3 + 20 + 9 = 32 (the total is cell 3, shown).
        let values = [3, 20, 9, 32];
        let sums = vec![vec![(0, 1), (1, 1), (2, 1), (3, -1)]];
        let hide = suppress(&values, &sums, 5);
        assert_eq!(hide[0], Hide::Small);
        // 9 is the smallest at least 2·5 − 1: 3 + 9 = 12 leaves the small count 1..4.
        assert_eq!(hide[2], Hide::Complement);
        assert_eq!((hide[1], hide[3]), (Hide::Shown, Hide::Shown));
        assert!(determined(&hide, &sums).is_empty());
    }

    #[test]
    fn two_sums_that_cross_are_both_protected() {
        // A 2 × 2 table with row and column totals: a = 2 is small.
        //   a  b | r1        2  10 | 12
        //   c  d | r2       30  40 | 70
        //  c1 c2            32  50
        let values = [2, 10, 30, 40, 12, 70, 32, 50];
        let sums = vec![
            vec![(0, 1), (1, 1), (4, -1)],
            vec![(2, 1), (3, 1), (5, -1)],
            vec![(0, 1), (2, 1), (6, -1)],
            vec![(1, 1), (3, 1), (7, -1)],
        ];
        let hide = suppress(&values, &sums, 5);
        assert_eq!(hide[0], Hide::Small);
        assert!(determined(&hide, &sums).is_empty(), "{hide:?}");
        // No sum is left with one hidden cell in it.
        for sum in &sums {
            let hidden = sum.iter().filter(|(c, _)| hide[*c] != Hide::Shown).count();
            assert!(hidden != 1, "{sum:?} in {hide:?}");
        }
    }
}
