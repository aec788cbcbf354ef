package io.github.lora4j.io;

import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.TreeMap;

/**
 * What a PEFT adapter file holds, from its header alone (no tensor decoded): the config, the safetensors metadata,
 * every LoRA module with its {@link Kind kind}, rank, alpha and shapes, every full tensor (PEFT's
 * {@code modules_to_save}, and trained biases) and every copy of a base weight. {@link PeftAdapterFiles} builds it
 * and checks it before reading any tensor data, so a hostile shape costs nothing; a caller can check it against a
 * model the same way through {@link PeftAdapterFiles#read(java.nio.file.Path, java.util.function.Consumer)}.
 *
 * <h2>Which key means what</h2>
 * Every key starts with {@code base_model.model.}, followed by a module path {@code <m>} and a role:
 * <table>
 *   <caption>tensor roles</caption>
 *   <tr><th>key suffix after {@code <m>}</th><th>role</th><th>shapes</th></tr>
 *   <tr><td>{@code .lora_A.weight}, {@code .lora_B.weight}, 2-D</td><td>{@link Kind#LINEAR} LoRA</td>
 *       <td>{@code A [r, in]}, {@code B [out, r]} (also for {@code fan_in_fan_out} layers)</td></tr>
 *   <tr><td>{@code .lora_A.weight}, {@code .lora_B.weight}, 3- to 5-D</td><td>{@link Kind#CONV} LoRA</td>
 *       <td>{@code A [r, in, k...]}, {@code B [out, r, 1...]}</td></tr>
 *   <tr><td>{@code .lora_magnitude_vector} (no {@code .weight}), 1-D, with {@code use_dora: true}</td>
 *       <td>DoRA's magnitude of a {@link Kind#LINEAR} module</td><td>{@code [out]}</td></tr>
 *   <tr><td>{@code .lora_embedding_A}, {@code .lora_embedding_B} (no {@code .weight})</td>
 *       <td>{@link Kind#EMBEDDING} LoRA</td><td>{@code A [r, num_embeddings]}, {@code B [dim, r]}</td></tr>
 *   <tr><td>{@code .weight}, {@code .bias}, {@code .modules_to_save.weight}/{@code .bias}</td>
 *       <td>full tensor replacing {@code <m>}'s parameter ({@code modules_to_save}, trained biases)</td>
 *       <td>the module's own</td></tr>
 *   <tr><td>{@code .original_module.<p>}, {@code .base_layer.<p>}</td>
 *       <td>a copy of a base parameter (except {@code base_layer.bias} when {@code bias} is not "none": a
 *       trained bias)</td><td>any</td></tr>
 * </table>
 * Anything else is refused, naming the key: keys still holding an adapter name ({@code lora_A.default.weight},
 * {@code lora_magnitude_vector.default.weight}), keys without the prefix, empty path segments. With {@code use_dora}
 * every LoRA module must have its magnitude, and only linear ones may (lora4j has DoRA for linear layers only);
 * without it no module may have one.
 */
public final class PeftAdapterLayout {

    /** The kind of layer a LoRA pair adapts. */
    public enum Kind {
        /** {@code nn.Linear} or GPT-2's {@code Conv1D}: {@code A [r, in]}, {@code B [out, r]}. */
        LINEAR,
        /** {@code nn.Embedding}: {@code A [r, num_embeddings]}, {@code B [dim, r]}. */
        EMBEDDING,
        /** {@code nn.Conv1d/2d/3d}: {@code A [r, in, k...]}, {@code B [out, r, 1...]}. */
        CONV
    }

    /**
     * One adapted module's LoRA pair.
     *
     * @param kind   the layer kind
     * @param rank   {@code r} ({@code rank_pattern} applied)
     * @param alpha  {@code lora_alpha} ({@code alpha_pattern} applied)
     * @param shapeA shape of {@code A}
     * @param shapeB shape of {@code B}
     */
    public record LoraModule(Kind kind, int rank, double alpha, long[] shapeA, long[] shapeB) {
        /**
         * Copies the shapes.
         *
         * @param kind   the layer kind
         * @param rank   {@code r}, the shared inner dimension of {@code A} and {@code B}
         * @param alpha  {@code lora_alpha}
         * @param shapeA shape of {@code A}; copied, the caller's array is not kept
         * @param shapeB shape of {@code B}; copied, the caller's array is not kept
         * @throws NullPointerException if {@code shapeA} or {@code shapeB} is {@code null}
         */
        public LoraModule {
            shapeA = shapeA.clone();
            shapeB = shapeB.clone();
        }

        /**
         * Shape of {@code A}.
         *
         * @return a fresh copy of the shape; modifying it changes nothing here
         */
        @Override
        public long[] shapeA() {
            return shapeA.clone();
        }

        /**
         * Shape of {@code B}.
         *
         * @return a fresh copy of the shape; modifying it changes nothing here
         */
        @Override
        public long[] shapeB() {
            return shapeB.clone();
        }

        /**
         * {@code in} of a linear or conv layer, {@code num_embeddings} of an embedding: {@code A}'s second dim.
         *
         * @return {@code A}'s second dimension ({@code shapeA()[1]})
         */
        public long in() {
            return shapeA[1];
        }

        /**
         * {@code out} of a linear or conv layer, the embedding dim of an embedding: {@code B}'s first dim.
         *
         * @return {@code B}'s first dimension ({@code shapeB()[0]})
         */
        public long out() {
            return shapeB[0];
        }

        /**
         * Value equality: the same kind, rank and alpha ({@link Double#compare}, as a record compares a
         * {@code double}) and shapes with equal elements ({@link Arrays#equals(long[], long[])}); the record's default
         * would compare the shape arrays by identity, so two reads of one file would never be equal.
         *
         * @param o the object to compare with
         * @return {@code true} if {@code o} is a {@code LoraModule} with equal components
         */
        @Override
        public boolean equals(Object o) {
            return o instanceof LoraModule m && kind == m.kind && rank == m.rank
                    && Double.compare(alpha, m.alpha) == 0 && Arrays.equals(shapeA, m.shapeA)
                    && Arrays.equals(shapeB, m.shapeB);
        }

        /**
         * A hash consistent with {@link #equals}: over the shapes' elements, not their identity.
         *
         * @return the hash code
         */
        @Override
        public int hashCode() {
            return 31 * (31 * (31 * (31 * Objects.hashCode(kind) + rank) + Double.hashCode(alpha)) + Arrays.hashCode(shapeA))
                    + Arrays.hashCode(shapeB);
        }

        @Override
        public String toString() {
            return kind + " r=" + rank + " alpha=" + alpha + " A" + Arrays.toString(shapeA) + " B"
                    + Arrays.toString(shapeB);
        }
    }

    static final String PREFIX = "base_model.model.";
    static final String A_SUFFIX = ".lora_A.weight";
    static final String B_SUFFIX = ".lora_B.weight";
    static final String EMB_A_SUFFIX = ".lora_embedding_A";
    static final String EMB_B_SUFFIX = ".lora_embedding_B";
    /** PEFT's name of DoRA's magnitude (saved without {@code .weight}, see {@code LoraModel._get_adapter_state_dict}). */
    static final String MAGNITUDE = "lora_magnitude_vector";
    static final String MAGNITUDE_SUFFIX = "." + MAGNITUDE;

    private final PeftAdapterConfig config;
    private final Map<String, String> metadata;
    private final Map<String, LoraModule> lora;
    private final Map<String, Map<String, long[]>> full;
    private final Map<String, long[]> baseCopies;
    private final Map<String, long[]> magnitudes;
    /** Tensor key to its place: for the reader. */
    final Map<String, String[]> roles;

    private PeftAdapterLayout(PeftAdapterConfig config, Map<String, String> metadata, Map<String, LoraModule> lora,
                              Map<String, Map<String, long[]>> full, Map<String, long[]> baseCopies,
                              Map<String, long[]> magnitudes, Map<String, String[]> roles) {
        this.config = config;
        // A linked copy, in file order: Map.copyOf degrades to quadratic time on many short keys (issue 29).
        this.metadata = Collections.unmodifiableMap(new LinkedHashMap<>(metadata));
        this.lora = Collections.unmodifiableMap(lora);
        this.full = Collections.unmodifiableMap(full);
        this.baseCopies = Collections.unmodifiableMap(baseCopies);
        this.magnitudes = Collections.unmodifiableMap(magnitudes);
        this.roles = roles;
    }

    /**
     * The parsed {@code adapter_config.json}.
     *
     * @return the config (immutable; shared, not copied)
     */
    public PeftAdapterConfig config() {
        return config;
    }

    /**
     * The safetensors {@code __metadata__} strings (e.g. {@code format = pt}, lora4j's provenance).
     *
     * @return an immutable map of the metadata strings; empty if the header has none
     */
    public Map<String, String> metadata() {
        return metadata;
    }

    /**
     * LoRA modules by path (without {@code base_model.model.}), sorted.
     *
     * @return an unmodifiable, sorted map from module path to its LoRA pair (a view of the layout's own map; the
     *         records hand out copies of their shapes)
     */
    public Map<String, LoraModule> loraModules() {
        return lora;
    }

    /**
     * Full tensors: module path to parameter name ({@code weight}, {@code bias}) to shape, sorted.
     *
     * @return an unmodifiable, sorted map; the shape arrays are fresh copies the caller may modify
     */
    public Map<String, Map<String, long[]>> fullTensors() {
        Map<String, Map<String, long[]>> out = new TreeMap<>();
        full.forEach((m, p) -> {
            Map<String, long[]> c = new TreeMap<>();
            p.forEach((k, v) -> c.put(k, v.clone()));
            out.put(m, Collections.unmodifiableMap(c));
        });
        return Collections.unmodifiableMap(out);
    }

    /**
     * Copies of base parameters ({@code original_module}, {@code base_layer}): tensor key (without prefix) to shape.
     *
     * @return an unmodifiable, sorted map; the shape arrays are fresh copies the caller may modify
     */
    public Map<String, long[]> baseCopies() {
        Map<String, long[]> out = new TreeMap<>();
        baseCopies.forEach((k, v) -> out.put(k, v.clone()));
        return Collections.unmodifiableMap(out);
    }

    /**
     * DoRA's magnitude vectors ({@code lora_magnitude_vector}): module path to shape ({@code [out]}), sorted; empty
     * unless the config has {@code use_dora}, and then one per LoRA module.
     *
     * @return an unmodifiable, sorted map; the shape arrays are fresh copies the caller may modify
     */
    public Map<String, long[]> magnitudes() {
        Map<String, long[]> out = new TreeMap<>();
        magnitudes.forEach((k, v) -> out.put(k, v.clone()));
        return Collections.unmodifiableMap(out);
    }

    // ---------------------------------------------------------------- building from a header

    /** Sorts every tensor of {@code header} into its role and checks shapes and ranks against {@code config}. */
    static PeftAdapterLayout of(PeftAdapterConfig config, Safetensors.Header header, String what)
            throws AdapterFormatException {
        Map<String, long[]> as = new TreeMap<>();
        Map<String, long[]> bs = new TreeMap<>();
        Map<String, Kind> kinds = new TreeMap<>();
        Map<String, Map<String, long[]>> full = new TreeMap<>();
        Map<String, long[]> baseCopies = new TreeMap<>();
        Map<String, long[]> magnitudes = new TreeMap<>();
        Map<String, String[]> roles = new LinkedHashMap<>();
        boolean trainedBias = !config.bias().equals("none");
        for (Safetensors.Entry e : header.entries.values()) {
            String key = e.name;
            long[] shape = e.shape;
            if (!key.startsWith(PREFIX)) {
                throw unknown(what, key, "it does not start with " + PREFIX);
            }
            String rest = key.substring(PREFIX.length());
            String[] role = role(rest);
            if (role == null) {
                throw unknown(what, key, "its role is none of lora_A.weight, lora_B.weight, lora_embedding_A, "
                        + "lora_embedding_B, lora_magnitude_vector, weight, bias, modules_to_save.<weight|bias>, "
                        + "original_module.<p>, base_layer.<p>");
            }
            String module = role[0];
            String part = role[1];
            checkModulePath(what, key, module);
            switch (part) {
                case "A":
                case "B":
                case "embA":
                case "embB": {
                    boolean isA = part.equals("A") || part.equals("embA");
                    Kind kind = part.startsWith("emb") ? Kind.EMBEDDING : shape.length >= 3 ? Kind.CONV : Kind.LINEAR;
                    checkLoraShape(config, what, key, module, kind, isA, shape);
                    Kind other = kinds.putIfAbsent(module, kind);
                    if (other != null && other != kind) {
                        throw new AdapterFormatException(what + ": module '" + module + "' has " + other + " and "
                                + kind + " LoRA tensors; expected one kind per module (tensor '" + key + "', shape "
                                + Arrays.toString(shape) + ")");
                    }
                    (isA ? as : bs).put(module, shape);
                    break;
                }
                case "mag": {
                    if (!config.useDora()) {
                        throw new AdapterFormatException(what + ": tensor '" + key + "' is DoRA's magnitude, but "
                                + PeftAdapterFiles.CONFIG_FILE + " has no use_dora: true; expected no "
                                + MAGNITUDE + " in a plain LoRA adapter");
                    }
                    if (shape.length != 1 || shape[0] < 1) {
                        throw new AdapterFormatException(what + ": tensor '" + key + "': expected DoRA's magnitude of a "
                                + "linear module, a non-empty 1-D [out], got shape " + Arrays.toString(shape)
                                + (shape.length == 4 ? " (a conv module's; lora4j has DoRA for linear modules only)"
                                : ""));
                    }
                    magnitudes.put(module, shape);
                    break;
                }
                case "base": {
                    String param = role[2];
                    if (trainedBias && param.equals("bias") && rest.endsWith(".base_layer.bias")) {
                        putFull(full, what, key, module, "bias", shape);
                        role = new String[] {module, "full", "bias"};
                    } else {
                        baseCopies.put(rest, shape);
                    }
                    break;
                }
                default: // "full"
                    putFull(full, what, key, module, role[2], shape);
            }
            roles.put(key, role);
        }
        if (roles.isEmpty()) {
            throw new AdapterFormatException(what + ": expected at least one module's " + PREFIX + "<module>"
                    + A_SUFFIX + " and " + B_SUFFIX + ", found no tensors");
        }
        Map<String, LoraModule> lora = new TreeMap<>();
        for (String module : kinds.keySet()) {
            Kind kind = kinds.get(module);
            String[] suffix = kind == Kind.EMBEDDING ? new String[] {EMB_A_SUFFIX, EMB_B_SUFFIX}
                    : new String[] {A_SUFFIX, B_SUFFIX};
            long[] a = as.get(module);
            long[] b = bs.get(module);
            if (a == null || b == null) {
                String has = a == null ? suffix[1] : suffix[0];
                String lacks = a == null ? suffix[0] : suffix[1];
                throw new AdapterFormatException(what + ": module '" + module + "' has " + PREFIX + module + has
                        + " but expected also " + PREFIX + module + lacks + ", which is missing");
            }
            if (a.length != b.length) {
                throw new AdapterFormatException(what + ": module '" + module + "': expected A and B of the same rank, "
                        + "got A " + Arrays.toString(a) + " and B " + Arrays.toString(b));
            }
            if (full.containsKey(module)) {
                throw new AdapterFormatException(what + ": module '" + module + "' has both LoRA tensors and full "
                        + "tensors " + full.get(module).keySet() + "; expected one or the other (a bias trained beside "
                        + "LoRA, PEFT's bias = \"" + config.bias() + "\", would change a layer lora4j adapts)");
            }
            Number[] ra = patterned(config, module, what);
            lora.put(module, new LoraModule(kind, ra[0].intValue(), ra[1].doubleValue(), a, b));
        }
        checkMagnitudes(config, what, lora, magnitudes);
        return new PeftAdapterLayout(config, header.metadata, lora, full, baseCopies, magnitudes, roles);
    }

    /** With {@code use_dora}, exactly the LoRA modules have magnitudes, all linear, each {@code [out]}. */
    private static void checkMagnitudes(PeftAdapterConfig config, String what, Map<String, LoraModule> lora,
                                        Map<String, long[]> magnitudes) throws AdapterFormatException {
        if (!config.useDora()) {
            return;
        }
        for (Map.Entry<String, long[]> m : magnitudes.entrySet()) {
            LoraModule module = lora.get(m.getKey());
            if (module == null) {
                throw new AdapterFormatException(what + ": module '" + m.getKey() + "' has a " + MAGNITUDE + " but no "
                        + "lora_A / lora_B; expected DoRA's magnitude beside a LoRA pair");
            }
            if (module.kind() != Kind.LINEAR) {
                throw new AdapterFormatException(what + ": module '" + m.getKey() + "' is " + module.kind() + " LoRA "
                        + "with a DoRA " + MAGNITUDE + "; lora4j supports DoRA on linear modules only");
            }
            if (m.getValue()[0] != module.out()) {
                throw new AdapterFormatException(what + ": module '" + m.getKey() + "': expected " + MAGNITUDE + " ["
                        + module.out() + "] (out, B's rows), got " + Arrays.toString(m.getValue()));
            }
        }
        for (Map.Entry<String, LoraModule> e : lora.entrySet()) {
            if (!magnitudes.containsKey(e.getKey())) {
                throw new AdapterFormatException(what + ": module '" + e.getKey() + "' has no " + PREFIX + e.getKey()
                        + MAGNITUDE_SUFFIX + ", but " + PeftAdapterFiles.CONFIG_FILE + " says use_dora: true"
                        + (e.getValue().kind() == Kind.LINEAR ? "; expected one per LoRA module"
                        : "; lora4j supports DoRA on linear modules only"));
            }
        }
    }

    /**
     * {module, part, param} for a key without the prefix: part is A, B, embA, embB, full or base; null when the
     * key fits no role.
     */
    private static String[] role(String rest) {
        if (rest.endsWith(A_SUFFIX)) {
            return new String[] {cut(rest, A_SUFFIX), "A", null};
        }
        if (rest.endsWith(B_SUFFIX)) {
            return new String[] {cut(rest, B_SUFFIX), "B", null};
        }
        if (rest.endsWith(EMB_A_SUFFIX)) {
            return new String[] {cut(rest, EMB_A_SUFFIX), "embA", null};
        }
        if (rest.endsWith(EMB_B_SUFFIX)) {
            return new String[] {cut(rest, EMB_B_SUFFIX), "embB", null};
        }
        if (rest.endsWith(MAGNITUDE_SUFFIX)) {
            return new String[] {cut(rest, MAGNITUDE_SUFFIX), "mag", null};
        }
        int dot = rest.lastIndexOf('.');
        if (dot <= 0) {
            return null;
        }
        String param = rest.substring(dot + 1);
        String owner = rest.substring(0, dot);
        for (String copy : new String[] {".original_module", ".base_layer"}) {
            if (owner.endsWith(copy)) {
                return new String[] {cut(owner, copy), "base", param};
            }
        }
        if (!param.equals("weight") && !param.equals("bias")) {
            return null;
        }
        if (owner.endsWith(".modules_to_save")) {
            return new String[] {cut(owner, ".modules_to_save"), "full", param};
        }
        return new String[] {owner, "full", param};
    }

    private static String cut(String s, String suffix) {
        return s.substring(0, s.length() - suffix.length());
    }

    private static void checkModulePath(String what, String key, String module) throws AdapterFormatException {
        String problem = ModulePaths.problem(module);
        if (problem != null) {
            throw unknown(what, key, "its module path " + (module.isEmpty() ? "" : ModulePaths.quoted(module) + " ")
                    + problem);
        }
    }

    private static AdapterFormatException unknown(String what, String key, String why) {
        return new AdapterFormatException(what + ": unsupported tensor '" + Safetensors.brief(key) + "': " + why);
    }

    private static void putFull(Map<String, Map<String, long[]>> full, String what, String key, String module,
                                String param, long[] shape) throws AdapterFormatException {
        if (Arrays.stream(shape).anyMatch(d -> d < 1)) {
            throw new AdapterFormatException(what + ": tensor '" + key + "': expected a non-empty tensor, got shape "
                    + Arrays.toString(shape));
        }
        long[] old = full.computeIfAbsent(module, m -> new TreeMap<>()).put(param, shape);
        if (old != null) {
            throw new AdapterFormatException(what + ": module '" + module + "' has two full tensors for '" + param
                    + "' (the second is '" + key + "'); expected one");
        }
    }

    private static void checkLoraShape(PeftAdapterConfig config, String what, String key, String module, Kind kind,
                                       boolean isA, long[] shape) throws AdapterFormatException {
        String where = what + ": tensor '" + key + "'";
        String expected;
        switch (kind) {
            case LINEAR:
                expected = isA ? "[r, in]" : "[out, r]";
                break;
            case EMBEDDING:
                expected = isA ? "[r, num_embeddings]" : "[embedding_dim, r]";
                break;
            default:
                expected = isA ? "[r, in, k...]" : "[out, r, 1...]";
        }
        if ((kind == Kind.CONV ? shape.length > 5 : shape.length != 2) || Arrays.stream(shape).anyMatch(d -> d < 1)) {
            throw new AdapterFormatException(where + ": expected a non-empty " + (kind == Kind.CONV ? "3- to 5-D tensor "
                    : "matrix ") + expected + ", got shape " + Arrays.toString(shape));
        }
        int r = patterned(config, module, what)[0].intValue();
        long rank = isA ? shape[0] : shape[1];
        if (rank != r) {
            String source = config.rankPattern().isEmpty() ? " from " + PeftAdapterFiles.CONFIG_FILE
                    : " from r and rank_pattern of " + PeftAdapterFiles.CONFIG_FILE;
            String withR = isA ? expected.replaceFirst("\\[r,", "[" + r + ",")
                    : expected.replaceFirst(", r(\\]|,)", ", " + r + "$1");
            throw new AdapterFormatException(where + ": expected rank r = " + r + source + " (shape " + withR
                    + "), got shape " + Arrays.toString(shape));
        }
        if (kind == Kind.CONV && !isA) {
            for (int i = 2; i < shape.length; i++) {
                if (shape[i] != 1) {
                    throw new AdapterFormatException(where + ": expected a 1x1 kernel " + expected + ", got shape "
                            + Arrays.toString(shape));
                }
            }
        }
    }

    /** {rank, alpha} of {@code module} through the patterns; a regex too costly to match is a format error. */
    private static Number[] patterned(PeftAdapterConfig config, String module, String what)
            throws AdapterFormatException {
        try {
            return new Number[] {config.rankOf(module), config.alphaOf(module)};
        } catch (IllegalArgumentException e) {
            throw new AdapterFormatException(PeftAdapterFiles.CONFIG_FILE + ": " + e.getMessage() + " (in " + what + ")", e);
        }
    }

    /** Tensor keys in the order {@link PeftAdapterFiles} reads them. */
    List<String> keys() {
        return List.copyOf(roles.keySet());
    }

    @Override
    public String toString() {
        return "PeftAdapterLayout{" + config + ", lora=" + lora + ", full=" + full.keySet() + ", baseCopies="
                + baseCopies.keySet() + "}";
    }
}
