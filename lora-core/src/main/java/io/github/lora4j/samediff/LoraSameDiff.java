package io.github.lora4j.samediff;

import io.github.lora4j.LoraAdapter;
import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.WeightLayout;
import java.util.Arrays;
import java.util.Objects;
import org.nd4j.autodiff.samediff.SDVariable;
import org.nd4j.autodiff.samediff.SameDiff;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * A LoRA linear layer inside a {@link SameDiff} graph: {@code out = x W^T + b + s·(x A^T) B^T}, with {@code W} and
 * {@code b} as graph <em>constants</em> (no gradient, never updated) and {@code A}, {@code B} as trainable
 * <em>variables</em>, so {@code SameDiff.fit} trains the adapter alone.
 *
 * <pre>{@code
 * SameDiff sd = SameDiff.create();
 * SDVariable x = sd.placeHolder("x", DataType.FLOAT, -1, in);
 * LoraSameDiff q = LoraSameDiff.linear(sd, "q_proj", x, w, b, LoraConfig.builder().rank(8).alpha(16).build());
 * SDVariable y = q.output();                                  // [n, out], named "q_proj"
 * ... loss, sd.setTrainingConfig(...), sd.fit(...) ...
 * q.exportTo(layer, "default");                               // copy the trained A, B into a LoraLinear
 * }</pre>
 *
 * <p>{@code A} starts as {@link LoraLinear#wrap} would draw it for the same configuration (same seed, same
 * values), {@code B = 0}; so before training the graph computes exactly the base layer. Variable names are
 * {@code name + "/weight"}, {@code "/bias"}, {@code "/lora_A"}, {@code "/lora_B"}, and {@code name} for the output.
 *
 * <p>Who may change what: {@code W} and {@code b} enter the graph as constants (SameDiff holds them under its own
 * array objects; {@code sd.getArrForVarName(name + "/weight")} is not the caller's instance), and neither the graph
 * nor {@code fit} writes them. {@code A} and {@code B} are fresh arrays owned by the
 * graph. Dropout on the LoRA path is not supported here (a config with dropout is refused), since SameDiff's
 * dropout is not switched off at inference the way {@link LoraLinear#eval()} does.
 */
public final class LoraSameDiff {

    private final SameDiff sd;
    private final String name;
    private final LoraConfig config;
    private final WeightLayout layout;
    private final INDArray weightArray;
    private final INDArray biasArray;
    private final SDVariable weight;
    private final SDVariable bias;
    private final SDVariable loraA;
    private final SDVariable loraB;
    private final SDVariable output;

    private LoraSameDiff(SameDiff sd, String name, LoraConfig config, WeightLayout layout, INDArray w, INDArray b,
                         SDVariable weight, SDVariable bias, SDVariable loraA, SDVariable loraB, SDVariable output) {
        this.sd = sd;
        this.name = name;
        this.config = config;
        this.layout = layout;
        this.weightArray = w;
        this.biasArray = b;
        this.weight = weight;
        this.bias = bias;
        this.loraA = loraA;
        this.loraB = loraB;
        this.output = output;
    }

    /** {@link #linear(SameDiff, String, SDVariable, INDArray, INDArray, LoraConfig, WeightLayout)} with {@code W [out, in]}. */
    public static LoraSameDiff linear(SameDiff sd, String name, SDVariable x, INDArray w, INDArray b, LoraConfig config) {
        return linear(sd, name, x, w, b, config, WeightLayout.OUT_IN);
    }

    /**
     * Adds a LoRA linear layer to {@code sd}.
     *
     * @param sd     the graph
     * @param name   output variable name and prefix of the layer's variables; none of them may exist yet
     * @param x      input {@code [n, in]} (rank 2) of W's data type
     * @param w      frozen weight, {@code [out, in]} or, with {@link WeightLayout#IN_OUT}, {@code [in, out]}; FLOAT
     *               or DOUBLE; becomes a constant
     * @param b      frozen bias {@code [out]}, or null; becomes a constant
     * @param config adapter configuration (rank, alpha, rsLoRA, init, seed); dropout must be 0
     * @param layout how {@code w} is stored; IN_OUT is handled by mmul's transpose flag, not by a copy
     * @throws IllegalArgumentException for a bad weight, bias or config, an input of the wrong type or width, or
     *                                  a name already used in {@code sd}; {@code sd} is then unchanged
     */
    public static LoraSameDiff linear(SameDiff sd, String name, SDVariable x, INDArray w, INDArray b,
                                      LoraConfig config, WeightLayout layout) {
        Objects.requireNonNull(sd, "sd must not be null");
        Objects.requireNonNull(name, "name must not be null");
        Objects.requireNonNull(x, "x must not be null");
        Objects.requireNonNull(config, "config must not be null");
        Objects.requireNonNull(layout, "layout must not be null");
        if (config.dropout() != 0) {
            throw new IllegalArgumentException("LoRA dropout is not supported in the SameDiff path: expected dropout 0, got "
                    + config.dropout());
        }
        // Validates W, b and the rank exactly as the eager layer does, and draws A the same way from the seed.
        LoraLinear eager = LoraLinear.wrap(w, b, config, layout);
        if (x.dataType() != eager.dataType()) {
            throw new IllegalArgumentException("x data type: expected " + eager.dataType() + " (the weight's), got "
                    + x.dataType());
        }
        long[] xShape = x.getShape();
        if (xShape != null && (xShape.length != 2 || (xShape[1] >= 0 && xShape[1] != eager.inFeatures()))) {
            throw new IllegalArgumentException("x shape: expected [n, " + eager.inFeatures() + "], got "
                    + Arrays.toString(xShape));
        }
        for (String v : new String[] {name, name + "/weight", name + "/bias", name + "/lora_A", name + "/lora_B"}) {
            if (sd.hasVariable(v)) {
                throw new IllegalArgumentException("variable '" + v + "' already exists in this SameDiff graph");
            }
        }
        LoraAdapter init = eager.adapter(LoraLinear.DEFAULT_ADAPTER);
        SDVariable wc = sd.constant(name + "/weight", w);
        SDVariable bc = b == null ? null : sd.constant(name + "/bias", b.reshape(1, eager.outFeatures()));
        SDVariable a = sd.var(name + "/lora_A", init.a().dup('c'));
        SDVariable bb = sd.var(name + "/lora_B", init.b().dup('c'));
        SDVariable base = sd.mmul(x, wc, false, layout == WeightLayout.OUT_IN, false);        // x W^T   [n, out]
        if (bc != null) {
            base = base.add(bc);
        }
        SDVariable u = sd.mmul(x, a, false, true, false);                                     // x A^T   [n, r]
        SDVariable delta = sd.mmul(u, bb, false, true, false).mul(config.scaling());          // s u B^T [n, out]
        SDVariable out = base.add(name, delta);
        return new LoraSameDiff(sd, name, config, layout, w, b, wc, bc, a, bb, out);
    }

    /** The layer's output {@code [n, out]}, named {@link #name()}. */
    public SDVariable output() {
        return output;
    }

    /** Name of the output variable and prefix of the layer's variables. */
    public String name() {
        return name;
    }

    /** The constant holding {@code W}. */
    public SDVariable weight() {
        return weight;
    }

    /** The constant holding the bias as {@code [1, out]}, or null. */
    public SDVariable bias() {
        return bias;
    }

    /** The trainable variable {@code A [r, in]}. */
    public SDVariable loraA() {
        return loraA;
    }

    /** The trainable variable {@code B [out, r]}. */
    public SDVariable loraB() {
        return loraB;
    }

    /** The adapter configuration. */
    public LoraConfig config() {
        return config;
    }

    /** How {@code W} is stored. */
    public WeightLayout layout() {
        return layout;
    }

    /** A copy of the graph's current {@code A [r, in]}. */
    public INDArray currentA() {
        return sd.getArrForVarName(loraA.name()).dup('c');
    }

    /** A copy of the graph's current {@code B [out, r]}. */
    public INDArray currentB() {
        return sd.getArrForVarName(loraB.name()).dup('c');
    }

    /**
     * Copies the graph's current {@code A} and {@code B} into adapter {@code adapterName} of {@code layer} (see
     * {@link LoraLinear#setAdapterWeights}); the layer must have that adapter with this layer's shapes.
     *
     * @throws IllegalArgumentException for an unknown adapter or mismatched shapes or data type
     * @throws IllegalStateException    if that adapter is merged
     */
    public void exportTo(LoraLinear layer, String adapterName) {
        Objects.requireNonNull(layer, "layer must not be null");
        layer.setAdapterWeights(adapterName, currentA(), currentB());
    }

    /**
     * A new {@link LoraLinear} over the same {@code W} and bias arrays this layer was built from (referenced, not
     * copied, as {@link LoraLinear#wrap} always does: merging it writes that {@code W}), whose
     * {@value LoraLinear#DEFAULT_ADAPTER} adapter holds the graph's current {@code A} and {@code B}.
     */
    public LoraLinear toLoraLinear() {
        LoraLinear layer = LoraLinear.wrap(weightArray, biasArray, config, layout);
        exportTo(layer, LoraLinear.DEFAULT_ADAPTER);
        return layer;
    }
}
