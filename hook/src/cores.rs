// CPU lists ("0-3,6") and the choice of exclusive cores from the pool: the lowest free ones,
// with a refusal that names the pool and who holds it.
//! Core pool.

use std::collections::{BTreeMap, BTreeSet};

/// Parses a kernel CPU list (`0-3,6`, empty for none).
pub fn parse_list(s: &str) -> Result<BTreeSet<usize>, String> {
    let mut out = BTreeSet::new();
    for part in s.trim().split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let num = |x: &str| x.trim().parse::<usize>().map_err(|_| format!("'{s}' is not a CPU list (try 0-3,6)"));
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b || b - a > 4096 {
                    return Err(format!("'{s}': range {part} is backwards or too long"));
                }
                out.extend(a..=b);
            }
            None => {
                out.insert(num(part)?);
            }
        }
    }
    Ok(out)
}

/// Formats a CPU set as a kernel CPU list (`0-3,6`).
pub fn format_list<'a>(cpus: impl IntoIterator<Item = &'a usize>) -> String {
    let v: Vec<usize> = cpus.into_iter().copied().collect::<BTreeSet<_>>().into_iter().collect();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j + 1 < v.len() && v[j + 1] == v[j] + 1 {
            j += 1;
        }
        parts.push(if i == j { v[i].to_string() } else { format!("{}-{}", v[i], v[j]) });
        i = j + 1;
    }
    parts.join(",")
}

/// Picks `n` cores of `pool` that nobody in `held` (core → holder) has.
/// The refusal names the pool, how many are free, and each holder.
pub fn pick(pool: &BTreeSet<usize>, held: &BTreeMap<usize, String>, n: usize) -> Result<Vec<usize>, String> {
    let free: Vec<usize> = pool.iter().copied().filter(|c| !held.contains_key(c)).collect();
    if free.len() >= n {
        return Ok(free[..n].to_vec());
    }
    let holders: Vec<String> =
        held.iter().filter(|(c, _)| pool.contains(c)).map(|(c, h)| format!("core {c} held by {h}")).collect();
    Err(format!(
        "the core pool {} has {} free of {}, {n} wanted ({})",
        format_list(pool),
        free.len(),
        pool.len(),
        if holders.is_empty() { "none held".to_string() } else { holders.join(", ") }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_round_trip() {
        let s = parse_list("0-3,6, 8-9").unwrap();
        assert_eq!(s.iter().copied().collect::<Vec<_>>(), vec![0, 1, 2, 3, 6, 8, 9]);
        assert_eq!(format_list(&s), "0-3,6,8-9");
        assert_eq!(format_list(&parse_list("").unwrap()), "");
        assert!(parse_list("1-x").is_err());
        assert!(parse_list("5-2").is_err());
    }

    #[test]
    fn pick_lowest_free_and_name_holders() {
        let pool = parse_list("2-4").unwrap();
        let mut held = BTreeMap::new();
        held.insert(2, "container a".to_string());
        assert_eq!(pick(&pool, &held, 2).unwrap(), vec![3, 4]);
        let e = pick(&pool, &held, 3).unwrap_err();
        assert!(e.contains("pool 2-4") && e.contains("2 free of 3") && e.contains("core 2 held by container a"), "{e}");
    }
}
