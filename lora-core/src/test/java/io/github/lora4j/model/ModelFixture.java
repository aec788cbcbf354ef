package io.github.lora4j.model;

import static io.github.lora4j.TestData.bits;
import static io.github.lora4j.TestData.gaussian;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraLinear;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * A small DOUBLE model for the model-wide tests: every module reads {@code x [n, 8]}. Targets {@code "q", "fc"} match
 * {@link #Q0}, {@link #FC0} and {@link #Q1}, in that order; {@link #Q1} is the narrow last one ({@code [4, 8]}, so any
 * rank above 4 fails there only); {@link #K0} stays untargeted.
 */
final class ModelFixture {

    static final int IN = 8;
    static final String Q0 = "blk.0.attn.q";
    static final String K0 = "blk.0.attn.k";
    static final String FC0 = "blk.0.mlp.fc";
    static final String Q1 = "blk.1.attn.q";
    static final List<String> TARGETS = List.of("q", "fc");
    static final List<String> TARGETED = List.of(Q0, FC0, Q1);

    final Map<String, INDArray> weights = new LinkedHashMap<>();
    final Map<String, INDArray> biases = new LinkedHashMap<>();
    final LoraModel model;

    ModelFixture(long seed) {
        weights.put(Q0, gaussian(DataType.DOUBLE, seed, 0.4, 8, IN));
        weights.put(K0, gaussian(DataType.DOUBLE, seed + 1, 0.4, 8, IN));
        biases.put(K0, gaussian(DataType.DOUBLE, seed + 2, 0.1, 8));
        weights.put(FC0, gaussian(DataType.DOUBLE, seed + 3, 0.4, IN, 12));     // [in, out]
        biases.put(FC0, gaussian(DataType.DOUBLE, seed + 4, 0.1, 12));
        weights.put(Q1, gaussian(DataType.DOUBLE, seed + 5, 0.4, 4, IN));
        model = LoraModel.builder()
                .linear(Q0, weights.get(Q0), null)
                .linear(K0, weights.get(K0), biases.get(K0))
                .linearInOut(FC0, weights.get(FC0), biases.get(FC0))
                .linear(Q1, weights.get(Q1), null)
                .parametersOnly("blk.0.norm", 16)
                .build();
    }

    /** Applies LoRA (rank 2, alpha 4) to the targets and adds adapter {@code "a"} (rank 1, alpha 3, rsLoRA); both random. */
    ModelFixture withAdapters(long seed) {
        model.applyLora(LoraConfig.builder().rank(2).alpha(4).build(), TARGETS);
        model.addAdapter("a", LoraConfig.builder().rank(1).alpha(3).rsLora(true).build());
        randomise("default", seed);
        randomise("a", seed + 100);
        return this;
    }

    /** Gives adapter {@code name} of every targeted module random A and B. */
    void randomise(String name, long seed) {
        for (LoraLinear m : model.loraModules().values()) {
            int r = m.adapter(name).rank();
            m.setAdapterWeights(name, gaussian(DataType.DOUBLE, seed++, 0.5, r, m.inFeatures()),
                    gaussian(DataType.DOUBLE, seed++, 0.5, m.outFeatures(), r));
        }
    }

    /** Every weight's bits, by path. */
    Map<String, long[]> weightBits() {
        Map<String, long[]> out = new LinkedHashMap<>();
        weights.forEach((p, w) -> out.put(p, bits(w)));
        return out;
    }

    /** Every adapter's A and B bits of every targeted module, by "path/adapter/A|B". */
    Map<String, long[]> adapterBits() {
        Map<String, long[]> out = new LinkedHashMap<>();
        model.loraModules().forEach((p, m) -> {
            for (String n : m.adapterNames()) {
                out.put(p + "/" + n + "/A", bits(m.loraA(n)));
                out.put(p + "/" + n + "/B", bits(m.loraB(n)));
            }
        });
        return out;
    }
}
