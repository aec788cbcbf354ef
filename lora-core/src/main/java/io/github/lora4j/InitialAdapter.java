package io.github.lora4j;

import java.util.Objects;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * The adapter {@link LoraLinear#wrap(INDArray, INDArray, LoraConfig, WeightLayout)} would start with, without building
 * the layer: for hosts that keep {@code A} and {@code B} themselves (a SameDiff graph, a DL4J layer's parameters) and
 * must start exactly where a lora-core layer over the same {@code W} starts. {@code A} and {@code B} are
 * {@link LoraConfig#initialWeights}'s (deterministic from the config's seed); DoRA's magnitude is PEFT's initial
 * {@code m = ‖W + s·B·A‖_row} (with {@code B = 0}, the norms of W's output rows), rounded to W's type. Every check
 * is the one {@code wrap} makes, with its message, so a host refuses what the eager layer refuses.
 *
 * @param a         {@code A [r, in]}, of W's type; a new array the caller owns
 * @param b         {@code B [out, r]}, of W's type; a new array the caller owns
 * @param magnitude DoRA's {@code m [out]}, of W's type, a new array the caller owns; {@code null} for plain LoRA
 */
public record InitialAdapter(INDArray a, INDArray b, INDArray magnitude) {

    /**
     * Holds the three arrays as given.
     *
     * @param a         {@code A [r, in]}
     * @param b         {@code B [out, r]}
     * @param magnitude DoRA's {@code m [out]}, or {@code null} for plain LoRA
     * @throws NullPointerException if {@code a} or {@code b} is {@code null}
     */
    public InitialAdapter {
        Objects.requireNonNull(a, "a must not be null");
        Objects.requireNonNull(b, "b must not be null");
    }

    /**
     * The initial adapter of {@code LoraLinear.wrap(weight, bias, config, layout)}, bit for bit, with the same checks
     * and refusals; {@code W} and the bias are only read.
     *
     * @param weight {@code W} in {@code layout}, FLOAT or DOUBLE, finite; read only, not kept
     * @param bias   the bias {@code [out]} (or {@code [1, out]}) of W's type, or {@code null}; only checked, as
     *               {@code wrap} checks it
     * @param layout how {@code W} is stored; not {@code null}
     * @param config the adapter's rank, alpha, init, seed and DoRA flag; not {@code null}
     * @return new arrays {@code A}, {@code B} and, for DoRA, {@code m}
     * @throws IllegalArgumentException as {@code wrap}: a W that is not a finite FLOAT or DOUBLE matrix, a bias of the
     *                                  wrong shape or type, a rank below 1, a scaling not finite in W's type; for DoRA,
     *                                  an output row of {@code W} with norm 0
     * @throws NullPointerException     if {@code weight}, {@code layout} or {@code config} is {@code null}
     */
    public static InitialAdapter of(INDArray weight, INDArray bias, WeightLayout layout, LoraConfig config) {
        Objects.requireNonNull(layout, "layout must not be null");
        Objects.requireNonNull(config, "config must not be null");
        // The checks and order of LoraLinear.wrap: base(weight, bias, layout), then addAdapter(DEFAULT_ADAPTER, config).
        Checks.checkWeight(weight, layout);
        long out = layout == WeightLayout.OUT_IN ? weight.rows() : weight.columns();
        long in = layout == WeightLayout.OUT_IN ? weight.columns() : weight.rows();
        Checks.checkBias(bias, weight, out);
        Checks.checkNewAdapter(LoraLinear.DEFAULT_ADAPTER, config, in, out, weight.dataType());
        INDArray[] ab = AdapterSet.initialWeights(config, in, out, weight.dataType());
        INDArray m = config.useDora()
                ? Dora.create(weight, layout, ab[0], ab[1], config.scaling()).magnitude()    // m = ‖W + s·B·A‖_row
                : null;
        return new InitialAdapter(ab[0], ab[1], m);
    }
}
