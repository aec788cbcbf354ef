package io.github.lora4j.io;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.TreeMap;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * The validated contents of a PEFT adapter directory, detached from any model: the config and, per module,
 * {@code A [r, in]} and {@code B [out, r]}. Immutable: the arrays handed out are copies.
 *
 * <p>Values are the file's, widened exactly: {@code F32}, {@code F16} and {@code BF16} tensors become
 * {@link DataType#FLOAT}, {@code F64} tensors {@link DataType#DOUBLE}. Non-finite values are returned as stored
 * ({@link PeftAdapterFiles#load} refuses them).
 */
public final class PeftAdapter {

    private final PeftAdapterConfig config;
    private final Map<String, INDArray> a;
    private final Map<String, INDArray> b;
    private final Map<String, String> metadata;

    PeftAdapter(PeftAdapterConfig config, Map<String, INDArray> a, Map<String, INDArray> b,
                Map<String, String> metadata) {
        this.config = config;
        this.a = Collections.unmodifiableMap(new TreeMap<>(a));
        this.b = Collections.unmodifiableMap(new TreeMap<>(b));
        this.metadata = Map.copyOf(metadata);
    }

    /** The parsed {@code adapter_config.json}. */
    public PeftAdapterConfig config() {
        return config;
    }

    /** Module paths (e.g. {@code model.layers.0.self_attn.q_proj}, without {@code base_model.model.}), sorted. */
    public List<String> modules() {
        return Collections.unmodifiableList(new ArrayList<>(a.keySet()));
    }

    /**
     * A copy of {@code A} of {@code module}, shape {@code [r, in]}, FLOAT (or DOUBLE for an F64 file).
     *
     * @throws IllegalArgumentException for a module not in the file, listing those that are
     */
    public INDArray a(String module) {
        return require(a, module).dup('c');
    }

    /**
     * A copy of {@code B} of {@code module}, shape {@code [out, r]}, FLOAT (or DOUBLE for an F64 file).
     *
     * @throws IllegalArgumentException for a module not in the file, listing those that are
     */
    public INDArray b(String module) {
        return require(b, module).dup('c');
    }

    /** The safetensors {@code __metadata__} strings (e.g. {@code format = pt}). */
    public Map<String, String> metadata() {
        return metadata;
    }

    /** The stored arrays, not copied; for {@link PeftAdapterFiles#load}, which only reads them. */
    INDArray storedA(String module) {
        return a.get(module);
    }

    INDArray storedB(String module) {
        return b.get(module);
    }

    private INDArray require(Map<String, INDArray> m, String module) {
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
        return "PeftAdapter{" + config + ", modules=" + a.keySet() + "}";
    }
}
