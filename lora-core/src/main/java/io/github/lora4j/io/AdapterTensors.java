package io.github.lora4j.io;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.WeightLayout;
import java.util.Arrays;
import java.util.Objects;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * One linear module's adapter as bare tensors, for hosts that keep {@code A} and {@code B} themselves (a DL4J
 * layer's parameters, a SameDiff graph's variables) and save them as PEFT files without wrapping their weight in a
 * {@link io.github.lora4j.LoraLinear}: hand a list of these to
 * {@link PeftAdapterFiles.Saver#adapterTensors(String, java.util.Collection)}. The file then holds exactly what a
 * layer with this adapter would write: {@code base_model.model.<module>.lora_A.weight} {@code [r, in]},
 * {@code ...lora_B.weight} {@code [out, r]} (and {@code ...lora_magnitude_vector} {@code [out]} for DoRA), with
 * {@code config}'s rank, alpha, dropout, rsLoRA and DoRA flags, and {@code layout} counting towards the file's
 * {@code fan_in_fan_out}. {@code A} and {@code B} are stored alike for both layouts.
 *
 * <p>The record holds the arrays it is given (not copies); the saver copies them when they are handed to it, so what
 * is saved is their value at that moment. Nothing here or in the saver writes into them.
 *
 * @param module    the module path, e.g. {@code model.layers.0.self_attn.q_proj} (checked by the save, as every module
 *                  path is); not {@code null}
 * @param a         {@code A [r, in]}, FLOAT or DOUBLE; not {@code null}
 * @param b         {@code B [out, r]}, of {@code A}'s type; not {@code null}
 * @param magnitude DoRA's magnitude {@code m [out]} (PEFT's {@code lora_magnitude_vector}) of {@code A}'s type when
 *                  {@code config.useDora()}, else {@code null}
 * @param config    the adapter's configuration as the file should state it ({@code r} must be {@code A}'s rows;
 *                  {@code lora_alpha} is {@code config.alpha()}); its init and seed become the file's provenance
 *                  metadata unless the saver is given one; not {@code null}
 * @param layout    how the module's weight is stored ({@link WeightLayout#IN_OUT} is PEFT's {@code fan_in_fan_out});
 *                  not {@code null}
 */
public record AdapterTensors(String module, INDArray a, INDArray b, INDArray magnitude, LoraConfig config,
                             WeightLayout layout) {

    /**
     * Checks the shapes and types against each other and {@code config}; values (finite or not) are checked by the
     * save.
     *
     * @param module    the module path
     * @param a         {@code A [r, in]}
     * @param b         {@code B [out, r]}
     * @param magnitude DoRA's {@code m [out]}, or {@code null} for plain LoRA
     * @param config    the adapter's configuration
     * @param layout    how the module's weight is stored
     * @throws NullPointerException     if an argument but {@code magnitude} is {@code null}
     * @throws IllegalArgumentException if {@code A} is not {@code [config.rank(), in]} or {@code B} not
     *                                  {@code [out, config.rank()]} (naming the module, expected and actual shapes),
     *                                  {@code A} is not FLOAT or DOUBLE, {@code B} or {@code m} has another type, or
     *                                  {@code m} is missing for DoRA, given without DoRA, or not {@code [out]}
     */
    public AdapterTensors {
        Objects.requireNonNull(module, "module must not be null");
        Objects.requireNonNull(a, "a (lora_A) of module '" + module + "' must not be null");
        Objects.requireNonNull(b, "b (lora_B) of module '" + module + "' must not be null");
        Objects.requireNonNull(config, "config of module '" + module + "' must not be null");
        Objects.requireNonNull(layout, "layout of module '" + module + "' must not be null");
        int r = config.rank();
        if (a.rank() != 2 || a.rows() != r) {
            throw new IllegalArgumentException("module '" + module + "' lora_A: expected shape [" + r + ", in] (r from "
                    + "the config), got " + Arrays.toString(a.shape()));
        }
        if (b.rank() != 2 || b.columns() != r) {
            throw new IllegalArgumentException("module '" + module + "' lora_B: expected shape [out, " + r + "] (r from "
                    + "the config), got " + Arrays.toString(b.shape()));
        }
        if (a.dataType() != DataType.FLOAT && a.dataType() != DataType.DOUBLE) {
            throw new IllegalArgumentException("module '" + module + "' lora_A: expected FLOAT or DOUBLE, got "
                    + a.dataType());
        }
        if (b.dataType() != a.dataType()) {
            throw new IllegalArgumentException("module '" + module + "' lora_B: expected " + a.dataType()
                    + " (lora_A's type), got " + b.dataType());
        }
        if (config.useDora() != (magnitude != null)) {
            throw new IllegalArgumentException("module '" + module + "': " + (config.useDora()
                    ? "the config is DoRA (useDora), so expected a magnitude [" + b.rows() + "], got none"
                    : "the config is plain LoRA, so expected no magnitude, got one; set useDora in the config to save "
                    + "a DoRA adapter"));
        }
        if (magnitude != null) {
            if (magnitude.length() != b.rows() || !(magnitude.isVector() || magnitude.length() == 1)) {
                throw new IllegalArgumentException("module '" + module + "' lora_magnitude_vector: expected shape ["
                        + b.rows() + "] (lora_B's rows), got " + Arrays.toString(magnitude.shape()));
            }
            if (magnitude.dataType() != a.dataType()) {
                throw new IllegalArgumentException("module '" + module + "' lora_magnitude_vector: expected "
                        + a.dataType() + " (lora_A's type), got " + magnitude.dataType());
            }
        }
    }

    /** A copy holding private c-order copies of the arrays (the magnitude as PEFT's 1-D {@code [out]}). */
    AdapterTensors copy() {
        return new AdapterTensors(module, a.dup('c'), b.dup('c'),
                magnitude == null ? null : magnitude.dup('c').reshape(magnitude.length()), config, layout);
    }
}
