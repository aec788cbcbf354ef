package io.github.lora4j.io;

import com.fasterxml.jackson.core.JacksonException;
import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import com.fasterxml.jackson.core.StreamReadFeature;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.json.JsonMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraInit;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Optional;
import java.util.Set;
import java.util.regex.Pattern;
import java.util.regex.PatternSyntaxException;

/**
 * PEFT's {@code adapter_config.json} for a LoRA adapter; immutable.
 *
 * <p>Fields and their PEFT defaults (used when a key is absent or null): {@code peft_type} (required, must be
 * {@code "LORA"}), {@code r} (8), {@code lora_alpha} (8), {@code lora_dropout} (0), {@code target_modules}
 * (a list of module-name suffixes, or one string that PEFT treats as a regular expression; absent or null means
 * none), {@code use_rslora} (false), {@code use_dora} (false: DoRA, with a {@code lora_magnitude_vector} per module),
 * {@code fan_in_fan_out} (false), {@code bias} ({@code "none"}),
 * {@code rank_pattern} / {@code alpha_pattern} ({@code {}}: per-module {@code r} / {@code lora_alpha}, keys
 * matched as PEFT does, see {@link #rankOf}), {@code modules_to_save} (null), {@code base_model_name_or_path}
 * (null), {@code task_type} (null; see {@link #TASK_TYPES}), {@code init_lora_weights} (true). A config read from a
 * file keeps the whole file as {@link #raw()}.
 *
 * <p>Unknown keys are ignored (PEFT adds keys in every release), as are keys that only steer how PEFT builds a
 * model ({@code layers_to_transform}, {@code exclude_modules}, {@code auto_mapping}, ...): the tensors in the file
 * say which modules are adapted. Keys that PEFT defines and that would give a different model if the file were
 * read as plain LoRA are refused with an {@link AdapterFormatException} naming the key: {@code lora_bias} and
 * {@code use_qalora} when true in Python's sense (true, 1, "true", even "false": any non-empty string), {@code use_dora}
 * when it is anything but true, false, 0 or null (a string or a list, which PEFT would read as true), {@code alora_invocation_tokens}, {@code layer_replication}, {@code trainable_token_indices} and
 * {@code target_parameters} when set, and {@code init_lora_weights} other than true, false or {@code "gaussian"}
 * (PiSSA, OLoRA, CorDA, LoftQ, EVA... change the base weights; PEFT can convert such adapters to plain LoRA).
 * {@code fan_in_fan_out} is kept and written, but it does not affect loading: LoRA's {@code A [r, in]} and
 * {@code B [out, r]} are stored the same way for either weight layout.
 */
public final class PeftAdapterConfig {

    /** The only {@code peft_type} lora4j reads. */
    public static final String LORA = "LORA";

    /** Largest {@code adapter_config.json} read, 8 MiB (real ones are a few KB; rank patterns of huge models ~1 MB). */
    public static final long MAX_CONFIG_BYTES = 8L << 20;

    /**
     * PEFT's {@code TaskType} values, which its {@code AutoPeftModelFor…} classes and {@code PeftModel} subclasses key
     * on: {@code SEQ_CLS}, {@code SEQ_2_SEQ_LM}, {@code CAUSAL_LM}, {@code TOKEN_CLS}, {@code QUESTION_ANS},
     * {@code FEATURE_EXTRACTION}. {@link io.github.lora4j.model.LoraModel#setTaskType} accepts these (or null: no
     * task, PEFT's plain {@code PeftModel}); a value read from a file is kept whatever string it is, so a file from a
     * newer PEFT with a new task loads and saves back unchanged.
     */
    public static final List<String> TASK_TYPES = List.of("SEQ_CLS", "SEQ_2_SEQ_LM", "CAUSAL_LM", "TOKEN_CLS",
            "QUESTION_ANS", "FEATURE_EXTRACTION");

    /**
     * Most entries {@code rank_pattern} or {@code alpha_pattern} may hold, {@value}. Each key is a regular expression
     * compiled and kept (about 1–2 KB), and each module path is matched against the keys in file order, so the cost
     * grows with the count; real files hold one key per module whose rank differs (hundreds to a few thousand). A
     * config of 940,000 keys (8 MiB) ran a 256 MiB heap out of memory; it is now refused after a streaming count,
     * before any tree or pattern is built.
     */
    public static final int MAX_PATTERN_ENTRIES = 16_384;

    /** Counts pattern entries without building a tree (and without the mapper's duplicate-key set). */
    private static final JsonFactory COUNTER = new JsonFactory();

    private static final Set<String> BIAS_VALUES = Set.of("none", "all", "lora_only");

    static final JsonMapper JSON = JsonMapper.builder()
            .enable(StreamReadFeature.STRICT_DUPLICATE_DETECTION)
            .enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS)
            .enable(SerializationFeature.INDENT_OUTPUT)
            .build();

    private final String peftType;
    private final int r;
    private final double loraAlpha;
    private final double loraDropout;
    private final List<String> targetModules;
    private final String targetModulesRegex;
    private final boolean useRslora;
    private final boolean useDora;
    private final boolean fanInFanOut;
    private final String bias;
    private final Map<String, Integer> rankPattern;
    private final Map<String, Double> alphaPattern;
    private final List<String> modulesToSave;
    private final String baseModelNameOrPath;
    private final String taskType;
    private final ObjectNode raw;
    /** Compiled pattern keys, in file order (PEFT takes the first that matches). */
    private final List<Map.Entry<String, Pattern>> rankKeys;
    private final List<Map.Entry<String, Pattern>> alphaKeys;

    PeftAdapterConfig(int r, double loraAlpha, double loraDropout, List<String> targetModules,
                      String targetModulesRegex, boolean useRslora, boolean useDora, boolean fanInFanOut, String bias,
                      Map<String, Integer> rankPattern, Map<String, Double> alphaPattern, List<String> modulesToSave,
                      String baseModelNameOrPath, String taskType, ObjectNode raw) {
        this.peftType = LORA;
        this.r = r;
        this.loraAlpha = loraAlpha;
        this.loraDropout = loraDropout;
        this.targetModules = List.copyOf(targetModules);
        this.targetModulesRegex = targetModulesRegex;
        this.useRslora = useRslora;
        this.useDora = useDora;
        this.fanInFanOut = fanInFanOut;
        this.bias = bias;
        this.rankPattern = Collections.unmodifiableMap(new LinkedHashMap<>(rankPattern));
        this.alphaPattern = Collections.unmodifiableMap(new LinkedHashMap<>(alphaPattern));
        this.modulesToSave = modulesToSave == null ? null : List.copyOf(modulesToSave);
        this.baseModelNameOrPath = baseModelNameOrPath;
        this.taskType = taskType;
        this.rankKeys = PatternKeys.compile(this.rankPattern.keySet());
        this.alphaKeys = PatternKeys.compile(this.alphaPattern.keySet());
        // Last: toJson reads the fields above. Parsed back, so the node types are the ones a reader of the file sees.
        this.raw = raw != null ? raw.deepCopy() : parseOwn(toJson());
    }

    /**
     * The config PEFT would write for adapters made with {@code config} on modules whose names end in
     * {@code targets} (e.g. {@code ["q_proj", "v_proj"]}); {@code fanInFanOut} is true for weights stored
     * {@code [in, out]}. The init scheme and seed of {@code config} are not part of PEFT's file.
     *
     * @param config      the lora4j configuration; its rank, alpha, dropout, rsLoRA and DoRA flags are written
     * @param targets     module-name suffixes to list as {@code target_modules}, in order; copied, no element
     *                    {@code null}
     * @param fanInFanOut whether the adapted base weights are stored {@code [in, out]}
     * @return a new config with {@code bias "none"}, no patterns, no {@code modules_to_save}, no base model name and
     *         no task type
     * @throws NullPointerException if {@code config}, {@code targets} or an element of {@code targets} is {@code null}
     */
    public static PeftAdapterConfig from(LoraConfig config, List<String> targets, boolean fanInFanOut) {
        Objects.requireNonNull(config, "config must not be null");
        Objects.requireNonNull(targets, "targets must not be null");
        for (String t : targets) {
            Objects.requireNonNull(t, "target module names must not be null");
        }
        return new PeftAdapterConfig(config.rank(), config.alpha(), config.dropout(), targets, null,
                config.rsLora(), config.useDora(), fanInFanOut, "none", Map.of(), Map.of(), null, null, null, null);
    }

    /**
     * Always {@value #LORA}.
     *
     * @return {@value #LORA}
     */
    public String peftType() {
        return peftType;
    }

    /**
     * Default rank {@code r} of every module's update (see {@link #rankOf}); {@code A} is {@code [r, in]}.
     *
     * @return the default rank, {@code > 0}
     */
    public int r() {
        return r;
    }

    /**
     * Default {@code lora_alpha} (see {@link #alphaOf}): the scaling is {@code alpha / r}, or {@code alpha / sqrt(r)}.
     *
     * @return the default alpha
     */
    public double loraAlpha() {
        return loraAlpha;
    }

    /**
     * Dropout on the LoRA input path during training, in {@code [0, 1)}.
     *
     * @return the dropout probability
     */
    public double loraDropout() {
        return loraDropout;
    }

    /**
     * Module-name suffixes the adapter targets (in the file's order); empty when given as a regex or absent.
     *
     * @return an immutable list of the suffixes; empty when absent or given as a regex
     */
    public List<String> targetModules() {
        return targetModules;
    }

    /**
     * The regular expression, when {@code target_modules} was a single string (PEFT's regex form).
     *
     * @return the regex, or empty when {@code target_modules} was a list or absent
     */
    public Optional<String> targetModulesRegex() {
        return Optional.ofNullable(targetModulesRegex);
    }

    /**
     * Whether the scaling is {@code alpha / sqrt(r)}.
     *
     * @return {@code true} for rsLoRA scaling {@code alpha / sqrt(r)}, {@code false} for {@code alpha / r}
     */
    public boolean useRslora() {
        return useRslora;
    }

    /**
     * Whether the adapter is DoRA (PEFT's {@code use_dora}): each module then has a {@code lora_magnitude_vector}.
     *
     * @return {@code true} for DoRA
     */
    public boolean useDora() {
        return useDora;
    }

    /**
     * Whether the base weights are stored {@code [in, out]} (PEFT's {@code fan_in_fan_out}).
     *
     * @return {@code true} if the base weights are {@code [in, out]}
     */
    public boolean fanInFanOut() {
        return fanInFanOut;
    }

    /**
     * PEFT's {@code bias}: {@code "none"}, {@code "all"} or {@code "lora_only"}.
     *
     * @return one of {@code "none"}, {@code "all"}, {@code "lora_only"}
     */
    public String bias() {
        return bias;
    }

    /**
     * {@code rank_pattern}: pattern key to rank, in file order; empty when absent.
     *
     * @return an unmodifiable map in file order; empty when absent
     */
    public Map<String, Integer> rankPattern() {
        return rankPattern;
    }

    /**
     * {@code alpha_pattern}: pattern key to alpha, in file order; empty when absent.
     *
     * @return an unmodifiable map in file order; empty when absent
     */
    public Map<String, Double> alphaPattern() {
        return alphaPattern;
    }

    /**
     * {@code modules_to_save}: names of modules trained in full, or empty when null or absent.
     *
     * @return an immutable list of module names; empty when null or absent
     */
    public List<String> modulesToSave() {
        return modulesToSave == null ? List.of() : modulesToSave;
    }

    /**
     * {@code base_model_name_or_path}, when not null.
     *
     * @return the base model's name or path, or empty when absent or null
     */
    public Optional<String> baseModelNameOrPath() {
        return Optional.ofNullable(baseModelNameOrPath);
    }

    /**
     * {@code task_type} (e.g. {@code "CAUSAL_LM"}), when not null: usually one of {@link #TASK_TYPES}; a config read
     * from a file keeps whatever string the file holds.
     *
     * @return the task type, or empty when absent or null
     */
    public Optional<String> taskType() {
        return Optional.ofNullable(taskType);
    }

    /**
     * A copy of the whole JSON object. For a config read from a file ({@link PeftAdapterFiles#read}) it is the file's
     * object as read, unknown keys included. For a config built here ({@link #from}) it is the object a save writes
     * for these fields: each field above under its PEFT key (absent values as PEFT's defaults or null), plus
     * {@code init_lora_weights} true and {@code inference_mode} true.
     *
     * @return a deep copy of the JSON object; modifying it does not change this config
     */
    public JsonNode raw() {
        return raw.deepCopy();
    }

    /**
     * The rank of {@code module} (a path such as {@code model.layers.0.self_attn.q_proj}), as PEFT resolves it: the
     * first {@code rank_pattern} key equal to the path or, as a regex, matching its whole tail after a dot
     * ({@code (.*\.)?key}); {@link #r()} when none does.
     *
     * <p>A module path is required: {@code null} is refused even without patterns, as PEFT's own lookup
     * ({@code get_pattern_key}) fails on {@code None} once a pattern exists; the defaults are {@link #r()} and
     * {@link #loraAlpha()}.
     *
     * @param module the module path, without {@code base_model.model.}; not {@code null}
     * @return the rank {@code r} for that module
     * @throws IllegalArgumentException if {@code module} is {@code null}, or a key is a regex too expensive to match
     *                                  (catastrophic backtracking)
     */
    public int rankOf(String module) {
        requireModule(module);
        String key = PatternKeys.find(rankKeys, module);
        return key == null ? r : rankPattern.get(key);
    }

    /**
     * The alpha of {@code module}, resolved through {@code alpha_pattern} as {@link #rankOf} does.
     *
     * @param module the module path, without {@code base_model.model.}; not {@code null}
     * @return the alpha for that module
     * @throws IllegalArgumentException if {@code module} is {@code null}, or a key is a regex too expensive to match
     *                                  (catastrophic backtracking)
     */
    public double alphaOf(String module) {
        requireModule(module);
        String key = PatternKeys.find(alphaKeys, module);
        return key == null ? loraAlpha : alphaPattern.get(key);
    }

    private static void requireModule(String module) {
        if (module == null) {
            throw new IllegalArgumentException("module: expected a module path such as "
                    + "'model.layers.0.self_attn.q_proj', got null; the defaults are r() and loraAlpha()");
        }
    }

    /**
     * The lora4j configuration of these adapters: rank, alpha, dropout, rsLoRA and DoRA from the file, init
     * {@link LoraInit#ZERO} (the weights come from the file) and the default seed.
     *
     * @return a new config; every call builds another
     * @throws IllegalArgumentException if a value is outside lora4j's range (e.g. a non-positive alpha)
     */
    public LoraConfig toLoraConfig() {
        return LoraConfig.builder().rank(r).alpha(loraAlpha).dropout(loraDropout).rsLora(useRslora).useDora(useDora)
                .init(LoraInit.ZERO).build();
    }

    /**
     * {@link #toLoraConfig()} with the rank and alpha {@code rank_pattern} / {@code alpha_pattern} give {@code module}.
     *
     * @param module the module path, without {@code base_model.model.}; not {@code null}
     * @return a new config with that module's rank and alpha
     * @throws IllegalArgumentException if {@code module} is {@code null}, a value is outside lora4j's range (e.g. a
     *                                  non-positive alpha), or a pattern key is a regex too expensive to match
     */
    public LoraConfig toLoraConfig(String module) {
        return LoraConfig.builder().rank(rankOf(module)).alpha(alphaOf(module)).dropout(loraDropout)
                .rsLora(useRslora).useDora(useDora).init(LoraInit.ZERO).build();
    }

    // ---------------------------------------------------------------- JSON

    /**
     * The JSON PEFT reads: the fields above, {@code inference_mode} true and
     * {@code init_lora_weights} true (the weights are plain LoRA factors).
     */
    byte[] toJson() {
        try {
            return JSON.writeValueAsBytes(toJsonTree());
        } catch (JacksonException e) {
            throw new IllegalStateException("cannot serialise an in-memory JSON tree", e);
        }
    }

    private static ObjectNode parseOwn(byte[] json) {
        try {
            return (ObjectNode) JSON.readTree(json);
        } catch (IOException e) {
            throw new IllegalStateException("cannot parse the JSON this class wrote", e);
        }
    }

    private ObjectNode toJsonTree() {
        ObjectNode o = JSON.createObjectNode();
        o.put("peft_type", peftType);
        o.put("r", r);
        putAlpha(o, "lora_alpha", loraAlpha);
        o.put("lora_dropout", loraDropout);
        if (targetModulesRegex != null) {
            o.put("target_modules", targetModulesRegex);
        } else {
            ArrayNode t = o.putArray("target_modules");
            targetModules.forEach(t::add);
        }
        o.put("use_rslora", useRslora);
        o.put("use_dora", useDora);
        o.put("fan_in_fan_out", fanInFanOut);
        o.put("bias", bias);
        ObjectNode rp = o.putObject("rank_pattern");
        rankPattern.forEach(rp::put);
        ObjectNode ap = o.putObject("alpha_pattern");
        alphaPattern.forEach((k, v) -> putAlpha(ap, k, v));
        if (modulesToSave == null) {
            o.putNull("modules_to_save");
        } else {
            ArrayNode m = o.putArray("modules_to_save");
            modulesToSave.forEach(m::add);
        }
        o.put("init_lora_weights", true);
        o.put("inference_mode", true);
        if (taskType == null) {
            o.putNull("task_type");
        } else {
            o.put("task_type", taskType);
        }
        if (baseModelNameOrPath == null) {
            o.putNull("base_model_name_or_path");
        } else {
            o.put("base_model_name_or_path", baseModelNameOrPath);
        }
        return o;
    }

    private static void putAlpha(ObjectNode o, String key, double alpha) {
        if (alpha == Math.rint(alpha) && Math.abs(alpha) < 1e15) {
            o.put(key, (long) alpha); // PEFT declares lora_alpha an int; write it so when it is one
        } else {
            o.put(key, alpha);
        }
    }

    /** Parses {@code adapter_config.json}; {@code what} names it in messages. */
    static PeftAdapterConfig parse(byte[] json, String what) throws AdapterFormatException {
        JsonNode root;
        String text = Safetensors.decodeUtf8(ByteBuffer.wrap(json), what);
        checkPatternSizes(text, what);
        try {
            root = JSON.readTree(text);
        } catch (JacksonException e) {
            throw new AdapterFormatException(what + ": not valid JSON (duplicate keys included): "
                    + e.getOriginalMessage(), e);
        }
        if (root == null || !root.isObject()) {
            throw new AdapterFormatException(what + ": expected a JSON object, got "
                    + (root == null ? "nothing" : root.getNodeType()));
        }
        JsonNode type = root.get("peft_type");
        if (type == null || !type.isTextual() || !LORA.equals(type.textValue())) {
            throw new AdapterFormatException(what + ": expected peft_type \"" + LORA + "\", got "
                    + (type == null ? "none" : type));
        }
        refuseUnsupported(root, what);
        int r = (int) integer(root, "r", 8, what);
        double alpha = alpha(root.get("lora_alpha"), 8, "lora_alpha", what);
        double dropout = number(root, "lora_dropout", 0, what);
        if (!(dropout >= 0 && dropout < 1)) {
            throw new AdapterFormatException(what + ": expected lora_dropout in [0, 1), got " + dropout);
        }
        List<String> targets = new ArrayList<>();
        String regex = null;
        JsonNode t = root.get("target_modules");
        if (t != null && t.isTextual()) {
            regex = t.textValue();
        } else if (t != null && t.isArray()) {
            targets = strings(t, "target_modules", what);
        } else if (t != null && !t.isNull()) {
            throw new AdapterFormatException(what + ": expected target_modules to be a list of strings, a string "
                    + "(regex) or null, got " + t.getNodeType());
        }
        boolean rslora = bool(root, "use_rslora", what);
        boolean dora = useDora(root.get("use_dora"), what);
        boolean fanInFanOut = bool(root, "fan_in_fan_out", what);
        JsonNode b = root.get("bias");
        String bias = "none";
        if (b != null && !b.isNull()) {
            if (!b.isTextual() || !BIAS_VALUES.contains(b.textValue())) {
                throw new AdapterFormatException(what + ": expected bias to be one of " + BIAS_VALUES + ", got " + b);
            }
            bias = b.textValue();
        }
        Map<String, Integer> rankPattern = new LinkedHashMap<>();
        for (Map.Entry<String, JsonNode> e : pattern(root, "rank_pattern", what).entrySet()) {
            JsonNode v = e.getValue();
            if (!v.isIntegralNumber() || !v.canConvertToInt() || v.intValue() < 1) {
                throw new AdapterFormatException(what + ": expected rank_pattern['" + e.getKey()
                        + "'] to be an integer >= 1, got " + v);
            }
            rankPattern.put(e.getKey(), v.intValue());
        }
        Map<String, Double> alphaPattern = new LinkedHashMap<>();
        for (Map.Entry<String, JsonNode> e : pattern(root, "alpha_pattern", what).entrySet()) {
            alphaPattern.put(e.getKey(), alpha(e.getValue(), 0, "alpha_pattern['" + e.getKey() + "']", what));
        }
        List<String> modulesToSave = null;
        JsonNode m = root.get("modules_to_save");
        if (m != null && !m.isNull()) {
            if (!m.isArray()) {
                throw new AdapterFormatException(what + ": expected modules_to_save to be a list of strings or null, got "
                        + m.getNodeType());
            }
            modulesToSave = strings(m, "modules_to_save", what);
        }
        JsonNode base = root.get("base_model_name_or_path");
        if (base != null && !base.isNull() && !base.isTextual()) {
            throw new AdapterFormatException(what + ": expected base_model_name_or_path to be a string or null, got "
                    + base.getNodeType());
        }
        JsonNode task = root.get("task_type");
        if (task != null && !task.isNull() && !task.isTextual()) {
            throw new AdapterFormatException(what + ": expected task_type to be a string (one of PEFT's " + TASK_TYPES
                    + ") or null, got " + task.getNodeType());
        }
        return new PeftAdapterConfig(r, alpha, dropout, targets, regex, rslora, dora, fanInFanOut, bias, rankPattern,
                alphaPattern, modulesToSave, base == null || base.isNull() ? null : base.textValue(),
                task == null || task.isNull() ? null : task.textValue(), (ObjectNode) root);
    }

    /**
     * Refuses a {@code rank_pattern} or {@code alpha_pattern} of more than {@link #MAX_PATTERN_ENTRIES} entries, counted
     * by streaming the top-level object: memory stays at one token. Malformed JSON is left to the tree parser, whose
     * message names the problem.
     */
    private static void checkPatternSizes(String json, String what) throws AdapterFormatException {
        try (JsonParser p = COUNTER.createParser(json)) {
            if (p.nextToken() != JsonToken.START_OBJECT) {
                return;
            }
            while (p.nextToken() == JsonToken.FIELD_NAME) {
                String key = p.currentName();
                JsonToken value = p.nextToken();
                if ((key.equals("rank_pattern") || key.equals("alpha_pattern")) && value == JsonToken.START_OBJECT) {
                    long entries = 0;
                    while (p.nextToken() == JsonToken.FIELD_NAME) {
                        entries++;
                        p.nextToken();
                        p.skipChildren();
                    }
                    if (entries > MAX_PATTERN_ENTRIES) {
                        throw new AdapterFormatException(what + ": " + key + " holds " + entries + " entries; expected at "
                                + "most " + MAX_PATTERN_ENTRIES + " (one per module whose rank or alpha differs)");
                    }
                } else {
                    p.skipChildren();
                }
            }
        } catch (JacksonException e) {
            // Not valid JSON: readTree refuses it with the parser's own message.
        } catch (AdapterFormatException e) {
            throw e;
        } catch (IOException e) {
            throw new IllegalStateException("reading a JSON string failed", e);
        }
    }

    /** The keys that would change the model if ignored; each refusal names the key and what PEFT would do. */
    private static void refuseUnsupported(JsonNode root, String what) throws AdapterFormatException {
        for (String key : List.of("lora_bias", "use_qalora")) {
            JsonNode n = root.get(key);
            if (truthy(n)) {
                throw new AdapterFormatException(what + ": " + key + " is not supported (it changes the layer's "
                        + "arithmetic); expected false, null or absent, got " + n
                        + (n.isBoolean() ? "" : ", which PEFT treats as true"));
            }
        }
        for (String key : List.of("alora_invocation_tokens", "layer_replication", "trainable_token_indices",
                "target_parameters")) {
            JsonNode n = root.get(key);
            if (n != null && !n.isNull() && !(n.isContainerNode() && n.isEmpty())) {
                throw new AdapterFormatException(what + ": " + key + " is not supported (a plain LoRA reading would "
                        + "give a different model); expected null or absent, got " + n);
            }
        }
        JsonNode init = root.get("init_lora_weights");
        if (init != null && !init.isNull() && !init.isBoolean()
                && !(init.isTextual() && init.textValue().equals("gaussian"))) {
            throw new AdapterFormatException(what + ": init_lora_weights " + init + " is not supported: expected true, "
                    + "false or \"gaussian\"; PiSSA, OLoRA, CorDA, LoftQ and similar inits also change the base weights "
                    + "(convert the adapter to plain LoRA with PEFT first)");
        }
    }

    /**
     * {@code use_dora}: true or false; 0 and null (or absent) are false. Anything else (1, "true", "false", a list) is
     * refused by name: PEFT would take a non-empty string, even "false", for true, and a file that says so is more
     * likely broken than meant.
     */
    private static boolean useDora(JsonNode n, String what) throws AdapterFormatException {
        if (n == null || n.isNull() || (n.isNumber() && n.doubleValue() == 0)) {
            return false;
        }
        if (!n.isBoolean()) {
            throw new AdapterFormatException(what + ": expected use_dora to be true, false or null, got " + n
                    + (truthy(n) ? ", which PEFT treats as true" : ""));
        }
        return n.booleanValue();
    }

    /** Python's truth value of a JSON value, as PEFT's {@code if config.lora_bias:} sees it. */
    private static boolean truthy(JsonNode n) {
        if (n == null || n.isNull()) {
            return false;
        }
        if (n.isBoolean()) {
            return n.booleanValue();
        }
        if (n.isNumber()) {
            return n.doubleValue() != 0;
        }
        if (n.isTextual()) {
            return !n.textValue().isEmpty();
        }
        return !n.isEmpty();
    }

    private static Map<String, JsonNode> pattern(JsonNode root, String key, String what) throws AdapterFormatException {
        JsonNode p = root.get(key);
        Map<String, JsonNode> out = new LinkedHashMap<>();
        if (p == null || p.isNull()) {
            return out;
        }
        if (!p.isObject()) {
            throw new AdapterFormatException(what + ": expected " + key + " to be an object, got " + p.getNodeType());
        }
        for (Map.Entry<String, JsonNode> e : p.properties()) {
            try {
                Pattern.compile(e.getKey());
            } catch (PatternSyntaxException ex) {
                throw new AdapterFormatException(what + ": " + key + " key '" + e.getKey()
                        + "' is not a valid regular expression: " + ex.getDescription());
            }
            out.put(e.getKey(), e.getValue());
        }
        return out;
    }

    private static List<String> strings(JsonNode array, String key, String what) throws AdapterFormatException {
        List<String> out = new ArrayList<>();
        for (JsonNode e : array) {
            if (!e.isTextual()) {
                throw new AdapterFormatException(what + ": expected " + key + " to hold strings, got " + e);
            }
            out.add(e.textValue());
        }
        return out;
    }

    private static double alpha(JsonNode n, double dflt, String key, String what) throws AdapterFormatException {
        if (n == null || n.isNull()) {
            return dflt;
        }
        if (!n.isNumber()) {
            throw new AdapterFormatException(what + ": expected " + key + " to be a number, got " + n);
        }
        double alpha = n.doubleValue();
        if (!(alpha > 0) || Double.isInfinite(alpha)) {
            throw new AdapterFormatException(what + ": expected " + key + " finite and > 0, got " + alpha);
        }
        return alpha;
    }

    private static long integer(JsonNode root, String key, long dflt, String what) throws AdapterFormatException {
        JsonNode n = root.get(key);
        if (n == null || n.isNull()) {
            return dflt;
        }
        if (!n.isIntegralNumber() || !n.canConvertToInt() || n.intValue() < 1) {
            throw new AdapterFormatException(what + ": expected " + key + " to be an integer >= 1, got " + n);
        }
        return n.intValue();
    }

    private static double number(JsonNode root, String key, double dflt, String what) throws AdapterFormatException {
        JsonNode n = root.get(key);
        if (n == null || n.isNull()) {
            return dflt;
        }
        if (!n.isNumber()) {
            throw new AdapterFormatException(what + ": expected " + key + " to be a number, got " + n);
        }
        return n.doubleValue();
    }

    private static boolean bool(JsonNode root, String key, String what) throws AdapterFormatException {
        JsonNode n = root.get(key);
        if (n == null || n.isNull()) {
            return false;
        }
        if (!n.isBoolean()) {
            throw new AdapterFormatException(what + ": expected " + key + " to be true or false, got " + n);
        }
        return n.booleanValue();
    }

    /** Equal when every field lora4j interprets is equal; {@link #raw()} (unknown keys, formatting) is not compared. */
    @Override
    public boolean equals(Object o) {
        if (this == o) {
            return true;
        }
        if (!(o instanceof PeftAdapterConfig)) {
            return false;
        }
        PeftAdapterConfig c = (PeftAdapterConfig) o;
        return r == c.r && Double.compare(loraAlpha, c.loraAlpha) == 0
                && Double.compare(loraDropout, c.loraDropout) == 0 && useRslora == c.useRslora && useDora == c.useDora
                && fanInFanOut == c.fanInFanOut && peftType.equals(c.peftType) && bias.equals(c.bias)
                && targetModules.equals(c.targetModules) && Objects.equals(targetModulesRegex, c.targetModulesRegex)
                && rankPattern.equals(c.rankPattern) && alphaPattern.equals(c.alphaPattern)
                && modulesToSave().equals(c.modulesToSave())
                && Objects.equals(baseModelNameOrPath, c.baseModelNameOrPath) && Objects.equals(taskType, c.taskType);
    }

    @Override
    public int hashCode() {
        return Objects.hash(peftType, r, loraAlpha, loraDropout, targetModules, targetModulesRegex, useRslora, useDora,
                fanInFanOut, bias, rankPattern, alphaPattern, modulesToSave(), baseModelNameOrPath, taskType);
    }

    @Override
    public String toString() {
        return "PeftAdapterConfig{peft_type=" + peftType + ", r=" + r + ", lora_alpha=" + loraAlpha
                + ", lora_dropout=" + loraDropout + ", target_modules="
                + (targetModulesRegex != null ? "regex '" + targetModulesRegex + "'" : targetModules)
                + ", use_rslora=" + useRslora + (useDora ? ", use_dora=true" : "") + ", fan_in_fan_out=" + fanInFanOut
                + ", bias=" + bias
                + (rankPattern.isEmpty() ? "" : ", rank_pattern=" + rankPattern)
                + (alphaPattern.isEmpty() ? "" : ", alpha_pattern=" + alphaPattern)
                + (modulesToSave().isEmpty() ? "" : ", modules_to_save=" + modulesToSave)
                + (baseModelNameOrPath == null ? "" : ", base_model_name_or_path=" + baseModelNameOrPath)
                + (taskType == null ? "" : ", task_type=" + taskType) + "}";
    }
}
