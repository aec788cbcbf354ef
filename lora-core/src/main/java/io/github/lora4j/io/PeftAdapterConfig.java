package io.github.lora4j.io;

import com.fasterxml.jackson.core.JacksonException;
import com.fasterxml.jackson.core.StreamReadFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.json.JsonMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraInit;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import java.util.Optional;
import java.util.Set;

/**
 * PEFT's {@code adapter_config.json} for a LoRA adapter; immutable.
 *
 * <p>Fields and their PEFT defaults (used when a key is absent): {@code peft_type} (required, must be
 * {@code "LORA"}), {@code r} (8), {@code lora_alpha} (8), {@code lora_dropout} (0), {@code target_modules}
 * (a list of module-name suffixes, or one string that PEFT treats as a regular expression; absent or null means
 * none), {@code use_rslora} (false), {@code fan_in_fan_out} (false), {@code bias} ({@code "none"}).
 *
 * <p>Unknown keys are ignored (PEFT adds keys in every release). Keys that PEFT defines and that change the
 * arithmetic lora4j would perform are refused instead of ignored, because ignoring them would silently give a
 * different model: a non-empty {@code rank_pattern} or {@code alpha_pattern} (per-module rank or alpha) and
 * {@code use_dora: true}. {@code fan_in_fan_out} is kept and written, but it does not affect loading: LoRA's
 * {@code A [r, in]} and {@code B [out, r]} are stored the same way for either weight layout.
 */
public final class PeftAdapterConfig {

    /** The only {@code peft_type} lora4j reads. */
    public static final String LORA = "LORA";

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
    private final boolean fanInFanOut;
    private final String bias;

    private PeftAdapterConfig(int r, double loraAlpha, double loraDropout, List<String> targetModules,
                              String targetModulesRegex, boolean useRslora, boolean fanInFanOut, String bias) {
        this.peftType = LORA;
        this.r = r;
        this.loraAlpha = loraAlpha;
        this.loraDropout = loraDropout;
        this.targetModules = List.copyOf(targetModules);
        this.targetModulesRegex = targetModulesRegex;
        this.useRslora = useRslora;
        this.fanInFanOut = fanInFanOut;
        this.bias = bias;
    }

    /**
     * The config PEFT would write for adapters made with {@code config} on modules whose names end in
     * {@code targets} (e.g. {@code ["q_proj", "v_proj"]}); {@code fanInFanOut} is true for weights stored
     * {@code [in, out]}. The init scheme and seed of {@code config} are not part of PEFT's file.
     */
    public static PeftAdapterConfig from(LoraConfig config, List<String> targets, boolean fanInFanOut) {
        Objects.requireNonNull(config, "config must not be null");
        Objects.requireNonNull(targets, "targets must not be null");
        for (String t : targets) {
            Objects.requireNonNull(t, "target module names must not be null");
        }
        return new PeftAdapterConfig(config.rank(), config.alpha(), config.dropout(), targets, null,
                config.rsLora(), fanInFanOut, "none");
    }

    /** Always {@value #LORA}. */
    public String peftType() {
        return peftType;
    }

    /** Rank {@code r} of every module's update; {@code A} is {@code [r, in]}, {@code B} is {@code [out, r]}. */
    public int r() {
        return r;
    }

    /** {@code lora_alpha}: the scaling is {@code alpha / r}, or {@code alpha / sqrt(r)} with rsLoRA. */
    public double loraAlpha() {
        return loraAlpha;
    }

    /** Dropout on the LoRA input path during training, in {@code [0, 1)}. */
    public double loraDropout() {
        return loraDropout;
    }

    /** Module-name suffixes the adapter targets (in the file's order); empty when given as a regex or absent. */
    public List<String> targetModules() {
        return targetModules;
    }

    /** The regular expression, when {@code target_modules} was a single string (PEFT's regex form). */
    public Optional<String> targetModulesRegex() {
        return Optional.ofNullable(targetModulesRegex);
    }

    /** Whether the scaling is {@code alpha / sqrt(r)}. */
    public boolean useRslora() {
        return useRslora;
    }

    /** Whether the base weights are stored {@code [in, out]} (PEFT's {@code fan_in_fan_out}). */
    public boolean fanInFanOut() {
        return fanInFanOut;
    }

    /** PEFT's {@code bias}: {@code "none"}, {@code "all"} or {@code "lora_only"}. */
    public String bias() {
        return bias;
    }

    /**
     * The lora4j configuration of these adapters: rank, alpha, dropout and rsLoRA from the file, init
     * {@link LoraInit#ZERO} (the weights come from the file) and the default seed.
     *
     * @throws IllegalArgumentException if a value is outside lora4j's range (e.g. a non-positive alpha)
     */
    public LoraConfig toLoraConfig() {
        return LoraConfig.builder().rank(r).alpha(loraAlpha).dropout(loraDropout).rsLora(useRslora)
                .init(LoraInit.ZERO).build();
    }

    // ---------------------------------------------------------------- JSON

    /** The JSON PEFT reads, with {@code task_type} and {@code base_model_name_or_path} null. */
    byte[] toJson() {
        ObjectNode o = JSON.createObjectNode();
        o.put("peft_type", peftType);
        o.put("r", r);
        if (loraAlpha == Math.rint(loraAlpha) && Math.abs(loraAlpha) < 1e15) {
            o.put("lora_alpha", (long) loraAlpha); // PEFT declares lora_alpha an int; write it so when it is one
        } else {
            o.put("lora_alpha", loraAlpha);
        }
        o.put("lora_dropout", loraDropout);
        if (targetModulesRegex != null) {
            o.put("target_modules", targetModulesRegex);
        } else {
            ArrayNode t = o.putArray("target_modules");
            targetModules.forEach(t::add);
        }
        o.put("use_rslora", useRslora);
        o.put("fan_in_fan_out", fanInFanOut);
        o.put("bias", bias);
        o.putNull("task_type");
        o.putNull("base_model_name_or_path");
        try {
            return JSON.writeValueAsBytes(o);
        } catch (JacksonException e) {
            throw new IllegalStateException("cannot serialise an in-memory JSON tree", e);
        }
    }

    /** Parses {@code adapter_config.json}; {@code what} names it in messages. */
    static PeftAdapterConfig parse(byte[] json, String what) throws AdapterFormatException {
        JsonNode root;
        try {
            root = JSON.readTree(Safetensors.decodeUtf8(java.nio.ByteBuffer.wrap(json), what));
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
        for (String pattern : List.of("rank_pattern", "alpha_pattern")) {
            JsonNode p = root.get(pattern);
            if (p != null && !p.isNull() && !(p.isObject() && p.isEmpty())) {
                throw new AdapterFormatException(what + ": " + pattern + " is not supported (lora4j applies one r "
                        + "and one lora_alpha to every module); expected it absent or {}, got " + p);
            }
        }
        JsonNode dora = root.get("use_dora");
        if (dora != null && dora.isBoolean() && dora.booleanValue()) {
            throw new AdapterFormatException(what + ": use_dora is not supported; expected false, got true");
        }
        int r = (int) integer(root, "r", 8, what);
        double alpha = number(root, "lora_alpha", 8, what);
        double dropout = number(root, "lora_dropout", 0, what);
        if (!(alpha > 0) || Double.isInfinite(alpha)) {
            throw new AdapterFormatException(what + ": expected lora_alpha finite and > 0, got " + alpha);
        }
        if (!(dropout >= 0 && dropout < 1)) {
            throw new AdapterFormatException(what + ": expected lora_dropout in [0, 1), got " + dropout);
        }
        List<String> targets = new ArrayList<>();
        String regex = null;
        JsonNode t = root.get("target_modules");
        if (t != null && t.isTextual()) {
            regex = t.textValue();
        } else if (t != null && t.isArray()) {
            for (JsonNode e : t) {
                if (!e.isTextual()) {
                    throw new AdapterFormatException(what + ": expected target_modules to hold strings, got " + e);
                }
                targets.add(e.textValue());
            }
        } else if (t != null && !t.isNull()) {
            throw new AdapterFormatException(what + ": expected target_modules to be a list of strings, a string "
                    + "(regex) or null, got " + t.getNodeType());
        }
        boolean rslora = bool(root, "use_rslora", what);
        boolean fanInFanOut = bool(root, "fan_in_fan_out", what);
        JsonNode b = root.get("bias");
        String bias = "none";
        if (b != null && !b.isNull()) {
            if (!b.isTextual() || !BIAS_VALUES.contains(b.textValue())) {
                throw new AdapterFormatException(what + ": expected bias to be one of " + BIAS_VALUES + ", got " + b);
            }
            bias = b.textValue();
        }
        return new PeftAdapterConfig(r, alpha, dropout, targets, regex, rslora, fanInFanOut, bias);
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
                && Double.compare(loraDropout, c.loraDropout) == 0 && useRslora == c.useRslora
                && fanInFanOut == c.fanInFanOut && peftType.equals(c.peftType) && bias.equals(c.bias)
                && targetModules.equals(c.targetModules) && Objects.equals(targetModulesRegex, c.targetModulesRegex);
    }

    @Override
    public int hashCode() {
        return Objects.hash(peftType, r, loraAlpha, loraDropout, targetModules, targetModulesRegex, useRslora,
                fanInFanOut, bias);
    }

    @Override
    public String toString() {
        return "PeftAdapterConfig{peft_type=" + peftType + ", r=" + r + ", lora_alpha=" + loraAlpha
                + ", lora_dropout=" + loraDropout + ", target_modules="
                + (targetModulesRegex != null ? "regex '" + targetModulesRegex + "'" : targetModules)
                + ", use_rslora=" + useRslora + ", fan_in_fan_out=" + fanInFanOut + ", bias=" + bias + "}";
    }
}
