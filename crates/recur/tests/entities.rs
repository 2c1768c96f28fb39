//! `recur::metrics::entities` against seqeval (conlleval's chunk rules) on committed fixtures:
//! the chunks of 300 random, partly ill-formed BIO/BIOES sequences and the micro-averaged scores
//! of random predictions (tests/fixtures/entities/generate.py).

use recur::metrics::entities::chunks;
use recur::metrics::EntityScores;

#[test]
fn chunks_and_scores_equal_seqeval() {
    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/entities/chunks.json")).expect("fixture JSON");
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect()
    };
    let cases = fixture["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 300);
    for case in cases {
        let tags = strings(&case["tags"]);
        let expected: Vec<(String, usize, usize)> = case["chunks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (c[0].as_str().unwrap().to_string(), c[1].as_u64().unwrap() as usize, c[2].as_u64().unwrap() as usize)
            })
            .collect();
        assert_eq!(chunks(&tags), expected, "{tags:?}");
    }
    let mut scores = EntityScores::default();
    let (gold, predicted) = (fixture["gold"].as_array().unwrap(), fixture["predicted"].as_array().unwrap());
    for (g, p) in gold.iter().zip(predicted) {
        scores.add(&strings(g), &strings(p));
    }
    let (p, r, f) = scores.overall();
    let want = &fixture["scores"];
    for (got, name) in [(p, "precision"), (r, "recall"), (f, "f1")] {
        assert!((got - want[name].as_f64().unwrap()).abs() < 1e-12, "{name}: {got} vs {}", want[name]);
    }
}
