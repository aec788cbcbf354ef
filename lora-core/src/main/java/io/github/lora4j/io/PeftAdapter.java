package io.github.lora4j.io;

import io.github.lora4j.io.PeftAdapterLayout.Kind;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.TreeMap;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * The validated contents of a PEFT adapter directory, detached from any model: everything the files hold. Per
 * LoRA module its {@link Kind kind}, rank, alpha, {@code A} and {@code B} (linear {@code A [r, in]},
 * {@code B [out, r]}; embedding {@code A [r, num_embeddings]}, {@code B [dim, r]}; conv {@code A [r, in, k...]},
 * {@code B [out, r, 1...]}); the full tensors ({@code modules_to_save}, trained biases); copies of base weights;
 * the config (with its {@link PeftAdapterConfig#raw() raw JSON}) and the safetensors metadata. Nothing in the
 * files is dropped. Immutable: the arrays handed out are copies.
 *
 * <p>Values are the file's, widened exactly: {@code F32}, {@code F16} and {@code BF16} tensors become
 * {@link DataType#FLOAT}, {@code F64} tensors {@link DataType#DOUBLE}. Non-finite values are returned as stored
 * ({@link PeftAdapterFiles#load} refuses them).
 */
public final class PeftAdapter {

    private final PeftAdapterLayout layout;
    private final Map<String, INDArray> a;
    private final Map<String, INDArray> b;
    private final Map<String, Map<String, INDArray>> full;
    private final Map<String, INDArray> baseCopies;
    private final Map<String, INDArray> magnitudes;

    PeftAdapter(PeftAdapterLayout layout, Map<String, INDArray> a, Map<String, INDArray> b,
                Map<String, Map<String, INDArray>> full, Map<String, INDArray> baseCopies,
                Map<String, INDArray> magnitudes) {
        this.layout = layout;
        this.a = Collections.unmodifiableMap(new TreeMap<>(a));
        this.b = Collections.unmodifiableMap(new TreeMap<>(b));
        this.full = Collections.unmodifiableMap(new TreeMap<>(full));
        this.baseCopies = Collections.unmodifiableMap(new TreeMap<>(baseCopies));
        this.magnitudes = Collections.unmodifiableMap(new TreeMap<>(magnitudes));
    }

    /**
     * The parsed {@code adapter_config.json}.
     *
     * @return the config this adapter was read with (immutable; shared, not copied)
     */
    public PeftAdapterConfig config() {
        return layout.config();
    }

    /**
     * Kinds, ranks, alphas and shapes of everything in the file.
     *
     * @return the layout (immutable; shared, not copied)
     */
    public PeftAdapterLayout layout() {
        return layout;
    }

    /**
     * LoRA module paths of every kind (e.g. {@code model.layers.0.self_attn.q_proj}, without {@code base_model.model.}), sorted.
     *
     * @return an unmodifiable snapshot of the module paths, in natural string order
     */
    public List<String> modules() {
        return Collections.unmodifiableList(new ArrayList<>(a.keySet()));
    }

    /**
     * LoRA module paths of one kind, sorted.
     *
     * @param kind the kind to select; {@code null} matches no module
     * @return an unmodifiable list of the module paths of that kind, sorted; empty if there are none
     */
    public List<String> modules(Kind kind) {
        List<String> out = new ArrayList<>();
        layout.loraModules().forEach((m, l) -> {
            if (l.kind() == kind) {
                out.add(m);
            }
        });
        return Collections.unmodifiableList(out);
    }

    /**
     * The kind of LoRA module {@code module}.
     *
     * @param module a LoRA module path as listed by {@link #modules()}; not {@code null}
     * @return the module's kind
     * @throws IllegalArgumentException for a module without LoRA tensors, listing those that have them
     */
    public Kind kind(String module) {
        require(a, module);
        return layout.loraModules().get(module).kind();
    }

    /**
     * The rank of {@code module} ({@code rank_pattern} applied).
     *
     * @param module a LoRA module path as listed by {@link #modules()}; not {@code null}
     * @return the rank {@code r} of that module, {@code > 0}
     * @throws IllegalArgumentException for a module without LoRA tensors, listing those that have them
     * @throws NullPointerException     if {@code module} is {@code null}
     */
    public int rank(String module) {
        require(a, module);
        return layout.loraModules().get(module).rank();
    }

    /**
     * The alpha of {@code module} ({@code alpha_pattern} applied).
     *
     * @param module a LoRA module path as listed by {@link #modules()}; not {@code null}
     * @return the alpha of that module (the scale is {@code alpha / r}, or {@code alpha / sqrt(r)} with rsLoRA)
     * @throws IllegalArgumentException for a module without LoRA tensors, listing those that have them
     * @throws NullPointerException     if {@code module} is {@code null}
     */
    public double alpha(String module) {
        require(a, module);
        return layout.loraModules().get(module).alpha();
    }

    /**
     * A copy of {@code A} of {@code module}: {@code [r, in]}, {@code [r, num_embeddings]} or {@code [r, in, k...]};
     * FLOAT (or DOUBLE for an F64 file).
     *
     * @param module a LoRA module path as listed by {@link #modules()}; not {@code null}
     * @return a fresh c-order copy of {@code A}; the caller may modify it
     * @throws IllegalArgumentException for a module not in the file, listing those that are
     */
    public INDArray a(String module) {
        return require(a, module).dup('c');
    }

    /**
     * A copy of {@code B} of {@code module}: {@code [out, r]}, {@code [dim, r]} or {@code [out, r, 1...]}; FLOAT
     * (or DOUBLE for an F64 file).
     *
     * @param module a LoRA module path as listed by {@link #modules()}; not {@code null}
     * @return a fresh c-order copy of {@code B}; the caller may modify it
     * @throws IllegalArgumentException for a module not in the file, listing those that are
     */
    public INDArray b(String module) {
        return require(b, module).dup('c');
    }

    /**
     * A copy of DoRA's magnitude of {@code module} (PEFT's {@code lora_magnitude_vector}): {@code [out]}, FLOAT (or
     * DOUBLE for an F64 file).
     *
     * @param module a LoRA module path as listed by {@link #modules()}; not {@code null}
     * @return a fresh copy of the magnitude; the caller may modify it
     * @throws IllegalArgumentException for a module without a magnitude (a plain LoRA file has none), listing those
     *                                  that have one
     */
    public INDArray magnitude(String module) {
        return require(magnitudes, module).dup('c');
    }

    /**
     * Modules with full tensors ({@code modules_to_save}, trained biases), sorted.
     *
     * @return an unmodifiable list of the module paths that have full tensors; empty if there are none
     */
    public List<String> fullModules() {
        return List.copyOf(full.keySet());
    }

    /**
     * Copies of the full tensors of {@code module}: parameter name ({@code weight}, {@code bias}) to tensor.
     *
     * @param module a module path as listed by {@link #fullModules()}; not {@code null}
     * @return an unmodifiable map from parameter name to a fresh c-order copy of the tensor, sorted by name; the
     *         arrays may be modified by the caller
     * @throws IllegalArgumentException for a module without full tensors
     */
    public Map<String, INDArray> full(String module) {
        Objects.requireNonNull(module, "module must not be null");
        Map<String, INDArray> f = full.get(module);
        if (f == null) {
            throw new IllegalArgumentException("module '" + module + "' has no full tensors; expected one of "
                    + full.keySet());
        }
        Map<String, INDArray> out = new TreeMap<>();
        f.forEach((k, v) -> out.put(k, v.dup('c')));
        return Collections.unmodifiableMap(out);
    }

    /**
     * Full tensor {@code param} ({@code weight} or {@code bias}) of {@code module}, converted to {@code type} for a
     * module of that type.
     *
     * @param module a module path as listed by {@link #fullModules()}; not {@code null}
     * @param param  the parameter name, {@code weight} or {@code bias}; {@code null} names none
     * @param type   the data type of the target module, e.g. {@link DataType#FLOAT}; not {@code null}
     * @return a new array of data type {@code type} with the file's values; the caller may modify it
     * @throws AdapterFormatException   if it holds NaN or infinity
     * @throws IllegalArgumentException if the module or parameter is not in the file, or a value overflows
     *                                  {@code type}
     */
    public INDArray full(String module, String param, DataType type) throws AdapterFormatException {
        Map<String, INDArray> f = full(module);
        INDArray x = param == null ? null : f.get(param);
        if (x == null) {
            throw new IllegalArgumentException("module '" + module + "' has no full tensor '" + param + "'; expected one "
                    + "of " + full.get(module).keySet());
        }
        return AdapterLoader.convert(x, type, "modules_to_save module '" + module + "'", param);
    }

    /**
     * Copies of the base-weight copies ({@code <m>.original_module.<p>}, {@code <m>.base_layer.<p>}) by key.
     *
     * @return an unmodifiable map from safetensors key to a fresh c-order copy of the tensor; empty if the file holds
     *         none
     */
    public Map<String, INDArray> baseCopies() {
        Map<String, INDArray> out = new TreeMap<>();
        baseCopies.forEach((k, v) -> out.put(k, v.dup('c')));
        return Collections.unmodifiableMap(out);
    }

    /**
     * The safetensors {@code __metadata__} strings (e.g. {@code format = pt}).
     *
     * @return the metadata map as the layout holds it (immutable; not copied); empty if the file has none
     */
    public Map<String, String> metadata() {
        return layout.metadata();
    }

    /** The stored arrays, not copied; for {@link PeftAdapterFiles#load}, which only reads them. */
    INDArray storedA(String module) {
        return a.get(module);
    }

    INDArray storedB(String module) {
        return b.get(module);
    }

    /** The stored magnitude, not copied, or null for a plain LoRA module. */
    INDArray storedMagnitude(String module) {
        return magnitudes.get(module);
    }

    private static INDArray require(Map<String, INDArray> m, String module) {
        Objects.requireNonNull(module, "module must not be null");
        INDArray x = m.get(module);
        if (x == null) {
            throw new IllegalArgumentException("module '" + module + "' is not in the adapter; expected one of "
                    + m.keySet());
        }
        return x;
    }

    @Override
    public String toString() {
        return "PeftAdapter{" + layout.config() + ", modules=" + layout.loraModules() + ", full=" + full.keySet() + "}";
    }
}
