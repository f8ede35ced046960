//! "Did you mean" hints for names that do not resolve: a misspelt input, field or setting.

/// The candidate closest to `word` by edit distance, if it is close enough to be a likely typo
/// (at most a third of the word's length, and at least one edit is always allowed).
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .filter(|candidate| *candidate != word)
        .map(|candidate| (edit_distance(word, candidate), candidate))
        .filter(|(distance, _)| *distance <= limit)
        .min()
        .map(|(_, candidate)| candidate)
}

/// " (did you mean 'x'?)" for a near candidate, else "": to append to an error message.
pub fn suggestion<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    did_you_mean(word, candidates)
        .map(|near| format!(" (did you mean '{near}'?)"))
        .unwrap_or_default()
}

/// The edit distance between `a` and `b` in characters, counting a swap of two neighbours
/// as one edit (optimal string alignment): `tpoic` is one edit from `topic`.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut rows = vec![vec![0; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best =
                (rows[i - 1][j] + 1).min(rows[i][j - 1] + 1).min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_names_are_suggested_and_far_ones_are_not() {
        let names = ["enriched", "sessions", "humans"];
        assert_eq!(did_you_mean("enrichd", names), Some("enriched"));
        assert_eq!(did_you_mean("sesions", names), Some("sessions"));
        assert_eq!(did_you_mean("totally", names), None);
        assert_eq!(did_you_mean("tpoic", ["topic", "type"]), Some("topic"));
        assert_eq!(suggestion("humnas", names), " (did you mean 'humans'?)");
        assert_eq!(suggestion("x", names), "");
    }
}
