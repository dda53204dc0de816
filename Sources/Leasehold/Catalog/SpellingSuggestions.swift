/// Words longer than this get no "did you mean" hint: no key, handler or time zone name is this
/// long, and a catalog's author must not be able to make validation compare a huge string
/// against every time zone name.
let maxSuggestionInput = 64

/// The candidate nearest to `word` by edit distance (case-insensitive), if near enough to be a likely typo.
func closest(to word: String, in candidates: [String]) -> String? {
    // utf8.count is O(1) for native strings, so a huge word is turned away before it is walked.
    guard word.utf8.count <= 4 * maxSuggestionInput else { return nil }
    let w = Array(word.lowercased())
    guard w.count <= maxSuggestionInput else { return nil }
    let limit = w.count <= 4 ? 1 : (w.count <= 8 ? 2 : 3)
    var best: (String, Int)?
    for c in candidates {
        let lowered = Array(c.lowercased())
        // The distance is at least the difference in length: most candidates stop here.
        guard abs(lowered.count - w.count) <= min(limit, (best?.1 ?? Int.max) - 1) else { continue }
        if let d = editDistance(w, lowered, atMost: limit), d < (best?.1 ?? Int.max) { best = (c, d) }
    }
    return best?.0
}

/// Levenshtein distance, or nil as soon as it must exceed `bound` (every cell of a row is over it).
func editDistance(_ a: [Character], _ b: [Character], atMost bound: Int) -> Int? {
    if a.isEmpty { return b.count <= bound ? b.count : nil }
    if b.isEmpty { return a.count <= bound ? a.count : nil }
    var prev = Array(0...b.count)
    var cur = [Int](repeating: 0, count: b.count + 1)
    for i in 1...a.count {
        cur[0] = i
        var rowMinimum = i
        for j in 1...b.count {
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            rowMinimum = min(rowMinimum, cur[j])
        }
        // A row's minimum never decreases in the rows below it, so the distance is already over.
        if rowMinimum > bound { return nil }
        swap(&prev, &cur)
    }
    return prev[b.count] <= bound ? prev[b.count] : nil
}
