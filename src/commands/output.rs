//! What the data commands print: stage summaries (or their JSON) and taxonomy descriptions.

use anyhow::Result;

use lightgen::pipeline::curate::CurateSummary;
use lightgen::pipeline::encode::EncodeSummary;
use lightgen::pipeline::expand::ExpandSummary;
use lightgen::pipeline::generate::GenerateSummary;
use lightgen::taxonomy::Taxonomy;

pub fn print_expand(s: &ExpandSummary, json: bool) {
    if json {
        outln!("{}", serde_json::to_string_pretty(s).expect("summary serialises"));
        return;
    }
    outln!(
        "expand    {} prompts in {} parts ({} reused) in {:.1}s → {}/expand",
        s.produced,
        s.parts,
        s.parts_reused,
        s.seconds,
        s.run_dir
    );
    outln!("taxonomy  {}, capacity {:.0} distinct prompts", s.taxonomy, s.capacity);
    if s.capped {
        outln!("note      asked for {}, the taxonomy can produce only {}: stopped there", s.requested, s.produced);
    }
    let fams: Vec<String> = s.per_family.iter().map(|(k, v)| format!("{k} {v}")).collect();
    outln!("families  {}", fams.join(", "));
    outln!("dropped   {} duplicate draws", s.duplicates_dropped);
}

pub fn print_encode(s: &EncodeSummary, json: bool) {
    if json {
        outln!("{}", serde_json::to_string_pretty(s).expect("summary serialises"));
        return;
    }
    outln!(
        "encode    {} kept → {} training samples in {} shards ({} reused); {} prompts ({} samples) held out; {:.1}s ({:.0} images/s) → {}/encode",
        s.kept, s.train_samples, s.shards, s.shards_reused, s.held_out_prompts, s.held_out_samples, s.seconds, s.images_per_second, s.run_dir
    );
}

pub fn print_curate(s: &CurateSummary, json: bool) {
    if json {
        outln!("{}", serde_json::to_string_pretty(s).expect("summary serialises"));
        return;
    }
    outln!(
        "curate    {} samples: {} kept, {} rejected, scored by {} in {:.1}s ({:.0} images/s measured) → {}/curate",
        s.samples,
        s.kept,
        s.rejected,
        s.scorer,
        s.seconds,
        s.images_per_second,
        s.run_dir
    );
    let reasons: Vec<String> = s.reasons.iter().map(|(k, v)| format!("{k} {v}")).collect();
    outln!("reasons   {}", reasons.join(", "));
}

pub fn print_generate(s: &GenerateSummary, json: bool) {
    if json {
        outln!("{}", serde_json::to_string_pretty(s).expect("summary serialises"));
        return;
    }
    outln!(
        "generate  {} images of {} prompts ({} ok, {} failed) by {} in {:.1}s → {}/generate",
        s.samples,
        s.prompts,
        s.ok,
        s.failed,
        s.teacher,
        s.seconds,
        s.run_dir
    );
    outln!(
        "parts     {} ({} reused, {} repaired); made {} images at {:.0} images/s",
        s.parts,
        s.parts_reused,
        s.parts_repaired,
        s.made,
        s.images_per_second
    );
}

pub fn describe_taxonomy(tax: &Taxonomy, json: bool) -> Result<()> {
    if json {
        let v = serde_json::json!({
            "name": tax.name,
            "version": tax.version,
            "hash": tax.hash,
            "slots": tax.slots.iter().map(|s| serde_json::json!({"name": s.name, "values": s.values.len()})).collect::<Vec<_>>(),
            "templates": tax.templates.iter().map(|t| serde_json::json!({
                "id": t.id, "family": tax.families[t.family].name, "share": t.share, "capacity": t.capacity
            })).collect::<Vec<_>>(),
            "capacity": tax.total_capacity(),
        });
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let values: usize = tax.slots.iter().map(|s| s.values.len()).sum();
    outln!("taxonomy  {} v{} ({}), {} slots, {} values", tax.name, tax.version, tax.source, tax.slots.len(), values);
    for s in &tax.slots {
        let cats: std::collections::BTreeSet<&str> =
            s.values.iter().map(|v| v.path.split('/').next().unwrap_or("")).collect();
        let cats = cats.into_iter().filter(|c| !c.is_empty()).count();
        outln!(
            "  slot {:<16} {:>4} values{}",
            s.name,
            s.values.len(),
            if cats > 0 { format!(" in {cats} categories") } else { String::new() }
        );
    }
    for t in &tax.templates {
        outln!(
            "  template {:<28} family {:<14} share {:>6.2}%  capacity {:.0}",
            t.id,
            tax.families[t.family].name,
            t.share * 100.0,
            t.capacity
        );
    }
    outln!("capacity  {:.0} distinct prompts", tax.total_capacity());
    Ok(())
}
