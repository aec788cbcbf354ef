package io.github.lora4j.benchmarks.sidebyside;

import io.github.lora4j.LoraLinear;
import io.github.lora4j.MergeMode;
import io.github.lora4j.benchmarks.Fixtures;
import java.util.LinkedHashMap;
import java.util.Map;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * lora4j's side of the side-by-side benchmark: the same targets, shapes and formulas as
 * {@code lora-benchmarks/torch/side_by_side.py}, float32, with bias.
 */
final class JavaSide {

    private JavaSide() {
    }

    /** Measures every target of shape {@code (d, r, n)}; merges only where the script measures them too. */
    static Map<String, Timing.Stats> measure(int d, int r, int n, double budget) {
        Fixtures.GridCell cell = Fixtures.gridCell(d, r, n);
        INDArray x = cell.x();
        INDArray g = cell.g();
        LoraLinear plain = cell.plain();
        LoraLinear layer = cell.layer();

        Map<String, Timing.Stats> out = new LinkedHashMap<>();
        out.put("plain", Timing.measure(() -> plain.forward(x), budget));
        layer.merge(MergeMode.FAST);
        out.put("merged", Timing.measure(() -> layer.forward(x), budget));
        layer.unmerge();
        out.put("unmerged", Timing.measure(() -> layer.forward(x), budget));
        layer.train();
        out.put("step", Timing.measure(() -> {
            layer.forward(x);
            layer.backward(g, true);
            layer.zeroGrad();
        }, budget));
        out.put("step_nodx", Timing.measure(() -> {
            layer.forward(x);
            layer.backward(g, false);
            layer.zeroGrad();
        }, budget));
        layer.eval();
        if (n == 1 || d == 64) {
            for (MergeMode mode : MergeMode.values()) {
                out.put("merge_" + mode.name().toLowerCase(), Timing.measure(() -> {
                    layer.merge(mode);
                    layer.unmerge();
                }, budget));
            }
        }
        return out;
    }
}
