//! Text views of a graph for `autoprune graph` and `pretrain`: a per-node table and a summary.

use super::ModelGraph;

impl ModelGraph {
    /// Per-node table: name, op, output shape, params, MACs, group.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<28} {:<18} {:<16} {:>10} {:>12} {:>5}\n",
            "node", "op", "shape", "params", "MACs", "group"
        );
        for &i in self.order() {
            let node = self.node(i);
            out.push_str(&format!(
                "{:<28} {:<18} {:<16} {:>10} {:>12} {:>5}\n",
                node.name,
                node.op.type_name(),
                format!("{:?}", node.out_shape),
                self.node_params(i),
                self.node_flops(i),
                self.group_of(i).map(|g| g.to_string()).unwrap_or_default()
            ));
        }
        out
    }

    /// A few lines: totals and the prunable groups.
    pub fn summary(&self, name: &str) -> String {
        let groups = self.prunable_groups();
        let mut out = format!(
            "{name}: {} nodes, {} params, {} MACs per sample, {} prunable groups\n",
            self.order().len(),
            self.total_params(),
            self.total_flops(),
            groups.len()
        );
        for (i, g) in groups.iter().enumerate() {
            let producers: Vec<&str> = g
                .producers
                .iter()
                .map(|&p| self.node(p).name.as_str())
                .collect();
            let size = if g.block > 1 {
                format!("{} heads of {} channels", g.units(), g.block)
            } else {
                format!("{} channels", g.channels)
            };
            out.push_str(&format!(
                "  group {i}: {size}, produced by {}\n",
                producers.join(", ")
            ));
        }
        let pinned = self.pinned();
        if !pinned.is_empty() {
            out.push_str(&format!(
                "{} layer(s) keep all their output channels:\n",
                pinned.len()
            ));
            for p in pinned {
                out.push_str(&format!(
                    "  {}: {} ({})\n",
                    self.node(p.node).name,
                    p.reason,
                    self.node(p.at).name
                ));
            }
        }
        out
    }
}
