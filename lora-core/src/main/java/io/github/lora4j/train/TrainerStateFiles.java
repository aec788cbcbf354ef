package io.github.lora4j.train;

import com.fasterxml.jackson.core.JacksonException;
import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.StreamReadConstraints;
import com.fasterxml.jackson.core.StreamReadFeature;
import com.fasterxml.jackson.core.exc.StreamConstraintsException;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.json.JsonMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.github.lora4j.Lora4j;
import io.github.lora4j.LoraAdapter;
import io.github.lora4j.LoraTrainable;
import io.github.lora4j.io.AdapterFormatException;
import io.github.lora4j.io.SafeFiles;
import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.UUID;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.learning.config.IUpdater;
import org.nd4j.shade.jackson.databind.cfg.MapperConfig;
import org.nd4j.shade.jackson.databind.jsontype.PolymorphicTypeValidator;

/**
 * The two files of a saved {@link LoraTrainer}: {@value LoraTrainer#STATE_CONFIG_FILE} (settings, counters, the index
 * of the state tensors with their parameters' shapes) and {@value LoraTrainer#STATE_TENSORS_FILE} (the tensors, a
 * safetensors file). Both are written by {@link SafeFiles#write}, the adapter files' machinery (locks, temporaries,
 * modes, backup and put back), and carry one save id, so a pair from two saves is refused.
 *
 * <p>Reading trusts nothing. The JSON is parsed by the unshaded Jackson within limits (at most
 * {@value #MAX_JSON_BYTES} bytes, {@value #MAX_TOKENS} tokens, nesting {@value #MAX_DEPTH} deep, numbers of
 * {@value #MAX_NUMBER_CHARS} characters), so a number of millions of digits or a nesting 100,000 deep is an
 * {@link AdapterFormatException}, not minutes of parsing or a {@link StackOverflowError}. The updater object is then
 * checked node by node: every {@code @class} must be one of ND4J's updater and schedule classes by exact name
 * ({@link UpdaterRules#CLASSES}) before ND4J's own (shaded) Jackson sees it, so no other class is loaded, let alone
 * initialised. Then the values: hyper-parameters ({@link UpdaterRules}), the A/B shapes each state was saved for,
 * and finite state. The tensor file is read through {@link SafeFiles#readSafetensors}, its header checked against the
 * index before any tensor is decoded.
 */
final class TrainerStateFiles {

    static final String FORMAT = "lora4j-trainer-state";
    /** 2: each state entry holds its A and B shapes ({@code shape_A}, {@code shape_B}); 1 held none. */
    static final int FORMAT_VERSION = 2;

    /** Key of a DoRA magnitude's state in the index and the tensor file (PEFT's name for the parameter). */
    static final String MAGNITUDE = "lora_magnitude_vector";
    /** Largest {@value LoraTrainer#STATE_CONFIG_FILE} read: 8 MiB (about 30,000 adapters' entries). */
    static final int MAX_JSON_BYTES = 8 << 20;
    /** Most JSON tokens in {@value LoraTrainer#STATE_CONFIG_FILE}: bounds the tree built from it (tens of MB). */
    static final long MAX_TOKENS = 1_000_000;
    /** Deepest nesting: the format needs 4 for a schedule inside the updater; nested schedules a few more. */
    static final int MAX_DEPTH = 64;
    /** Longest number: a double prints in at most 24 characters. */
    static final int MAX_NUMBER_CHARS = 100;
    /** Most JSON nodes in the updater object (a MapSchedule of 50,000 iterations has 100,000). */
    static final int MAX_UPDATER_NODES = 200_000;

    private static final String CLASS_KEY = "@class";

    private static final JsonMapper JSON = JsonMapper.builder(JsonFactory.builder()
                    .enable(StreamReadFeature.STRICT_DUPLICATE_DETECTION)
                    .streamReadConstraints(StreamReadConstraints.builder()
                            .maxNestingDepth(MAX_DEPTH)
                            .maxNumberLength(MAX_NUMBER_CHARS)
                            .maxStringLength(MAX_JSON_BYTES)
                            .build())
                    .build())
            .enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS)
            .enable(SerializationFeature.INDENT_OUTPUT)
            .build();

    /**
     * ND4J's shaded Jackson, used only on an updater object already checked node by node: ND4J's updater and
     * schedule classes carry its annotations ({@code @class} type ids). The validator admits exactly
     * {@link UpdaterRules#CLASSES} by name, before a class is looked up.
     */
    private static final org.nd4j.shade.jackson.databind.json.JsonMapper ND4J =
            org.nd4j.shade.jackson.databind.json.JsonMapper.builder()
                    .enable(org.nd4j.shade.jackson.core.StreamReadFeature.STRICT_DUPLICATE_DETECTION)
                    .enable(org.nd4j.shade.jackson.databind.DeserializationFeature.FAIL_ON_TRAILING_TOKENS)
                    .enable(org.nd4j.shade.jackson.databind.DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES)
                    .polymorphicTypeValidator(new ExactClassNames())
                    .build();

    private TrainerStateFiles() {
    }

    /** The trainer's settings and counters, and the names of its layers in order. */
    record Settings(IUpdater updater, double clipGradientNorm, double weightDecay, int iteration, int epoch,
                    List<String> modules, boolean overModel) {
    }

    /**
     * One adapter's updater state: 1-D copies of A's and B's parts (and DoRA's magnitude part, else null), in the
     * layer's data type, and the shapes of the A and B they belong to.
     */
    record Saved(String module, String adapter, long[] shapeA, long[] shapeB, INDArray stateA, INDArray stateB,
                 INDArray stateM) {
    }

    /** How many steps an adapter has taken (the iteration its updater sees). */
    record Steps(String module, String adapter, int steps) {
    }

    /**
     * What {@link #read} found, checked against the layers; {@code steps} is null for a file written before adapters
     * counted their own steps.
     */
    record Loaded(Settings settings, List<Saved> states, List<Steps> steps) {
    }

    // ---------------------------------------------------------------- write

    /**
     * Writes both files through {@link SafeFiles#write}, after checking that {@link #read} would take them back:
     * the updater survives ND4J's JSON and its values {@link UpdaterRules}, the state is finite.
     *
     * @throws IllegalStateException    if the updater or the state could not be resumed (nothing is written then)
     * @throws IllegalArgumentException if two states would share a tensor key
     */
    static void write(Path dir, Settings s, List<Saved> states, List<Steps> steps) throws IOException {
        String saveId = UUID.randomUUID().toString();
        JsonNode updater = updaterTree(s.updater());
        try {
            IUpdater back = updater(updater, "the updater", s.iteration(), s.epoch());
            if (!back.equals(s.updater())) {
                throw new AdapterFormatException("ND4J's JSON gives back " + back + " for " + s.updater());
            }
        } catch (AdapterFormatException e) {
            throw new IllegalStateException("cannot save the trainer state: loadState could not resume it: "
                    + e.getMessage() + ". Nothing was written", e);
        }
        ObjectNode root = JSON.createObjectNode();
        root.put("format", FORMAT);
        root.put("format_version", FORMAT_VERSION);
        root.put("lora4j_version", Lora4j.version());
        root.put("save_id", saveId);
        root.set("updater", updater);
        root.put("clip_gradient_norm", s.clipGradientNorm());
        root.put("weight_decay", s.weightDecay());
        root.put("iteration", s.iteration());
        root.put("epoch", s.epoch());
        root.put("layers", s.overModel() ? "model modules" : "layer indices");
        ArrayNode modules = root.putArray("modules");
        s.modules().forEach(modules::add);
        ArrayNode index = root.putArray("states");
        Map<String, INDArray> tensors = new LinkedHashMap<>();
        int[] parts = UpdaterRules.nonNegativeParts(s.updater());
        for (Saved st : states) {
            String keyA = st.module() + "/" + st.adapter() + "/lora_A";
            String keyB = st.module() + "/" + st.adapter() + "/lora_B";
            String keyM = st.module() + "/" + st.adapter() + "/" + MAGNITUDE;
            if (tensors.put(keyA, st.stateA()) != null || tensors.put(keyB, st.stateB()) != null
                    || (st.stateM() != null && tensors.put(keyM, st.stateM()) != null)) {
                throw new IllegalArgumentException("two saved states share the key '" + keyA + "' or '" + keyB
                        + "'; module paths and adapter names containing '/' can collide, rename one");
            }
            String where = "module '" + st.module() + "', adapter '" + st.adapter() + "'";
            for (String problem : new String[] {stateProblem(st.stateA(), parts, s.updater()),
                stateProblem(st.stateB(), parts, s.updater()),
                st.stateM() == null ? null : stateProblem(st.stateM(), parts, s.updater())}) {
                if (problem != null) {
                    throw new IllegalStateException("cannot save the trainer state: " + where + ": " + problem
                            + "; loadState could not resume it (every step from it fails). Nothing was written");
                }
            }
            ObjectNode e = index.addObject();
            e.put("module", st.module());
            e.put("adapter", st.adapter());
            e.put("dtype", dtypeName(st.stateA().dataType()));
            putShape(e.putArray("shape_A"), st.shapeA());
            putShape(e.putArray("shape_B"), st.shapeB());
            e.put("lora_A", keyA);
            e.put("lora_B", keyB);
            if (st.stateM() != null) {
                e.put(MAGNITUDE, keyM);
            }
        }
        ArrayNode stepIndex = root.putArray("adapter_steps");
        for (Steps st : steps) {
            ObjectNode e = stepIndex.addObject();
            e.put("module", st.module());
            e.put("adapter", st.adapter());
            e.put("steps", st.steps());
        }
        byte[] json = JSON.writeValueAsBytes(root);
        Map<String, String> meta = new LinkedHashMap<>();
        meta.put("format", FORMAT);
        meta.put("save_id", saveId);
        // docs/files-and-state.md: the trainer's pair
        Map<String, SafeFiles.Content> files = new LinkedHashMap<>();
        // Tensors first: a crash between the renames leaves new tensors with the old JSON, whose save id differs, so
        // read refuses the pair instead of mixing two saves; a failed rename puts the old tensors back.
        files.put(LoraTrainer.STATE_TENSORS_FILE, SafeFiles.safetensors(tensors, meta));
        files.put(LoraTrainer.STATE_CONFIG_FILE, SafeFiles.bytes(json));
        SafeFiles.write(dir, files);
        // end
    }

    private static void putShape(ArrayNode a, long[] shape) {
        for (long d : shape) {
            a.add(d);
        }
    }

    /** ND4J's JSON of {@code u} (shaded Jackson, which knows its annotations), as an unshaded tree. */
    private static JsonNode updaterTree(IUpdater u) {
        try {
            return JSON.readTree(ND4J.writeValueAsBytes(u));
        } catch (IOException | IllegalArgumentException e) {
            throw new IllegalArgumentException("updater " + u + " cannot be saved as JSON: " + e.getMessage(), e);
        }
    }

    // ---------------------------------------------------------------- read

    /** Reads and checks both files against {@code layers} (name to layer, in the trainer's order). */
    static Loaded read(Path dir, Map<String, LoraTrainable> layers, boolean overModel) throws IOException {
        String jsonName = LoraTrainer.STATE_CONFIG_FILE;
        JsonNode root = parse(SafeFiles.readBounded(dir.resolve(jsonName), MAX_JSON_BYTES), jsonName);
        if (!root.isObject()) {
            throw new AdapterFormatException(jsonName + ": expected a JSON object, got " + brief(root));
        }
        String format = text(root, "format", jsonName);
        if (!FORMAT.equals(format)) {
            throw new AdapterFormatException(jsonName + ": format: expected \"" + FORMAT + "\", got \"" + brief(format)
                    + "\"");
        }
        int version = nonNegativeInt(root, "format_version", jsonName);
        if (version != FORMAT_VERSION) {
            throw new AdapterFormatException(jsonName + ": format_version: expected " + FORMAT_VERSION + ", got "
                    + version + " (written by lora4j " + brief(root.path("lora4j_version").asText("?")) + ")"
                    + (version == 1 ? "; version 1 files lack the A/B shapes each state belongs to, so they cannot be "
                    + "checked against the model: save the state again with this version" : ""));
        }
        String saveId = text(root, "save_id", jsonName);
        double clip = nonNegativeFinite(root, "clip_gradient_norm", jsonName);
        double wd = nonNegativeFinite(root, "weight_decay", jsonName);
        int iteration = nonNegativeInt(root, "iteration", jsonName);
        int epoch = nonNegativeInt(root, "epoch", jsonName);
        IUpdater updater = updater(root.get("updater"), jsonName + ": updater", iteration, epoch);

        List<String> modules = new ArrayList<>();
        for (JsonNode m : array(root, "modules", jsonName)) {
            if (!m.isTextual()) {
                throw new AdapterFormatException(jsonName + ": modules: expected strings, got " + brief(m));
            }
            modules.add(m.asText());
        }
        List<String> expectedModules = new ArrayList<>(layers.keySet());
        if (!modules.equals(expectedModules)) {
            throw new AdapterFormatException(jsonName + ": modules: expected the trainer's layers "
                    + brief(expectedModules.toString()) + (overModel ? " (the model's LoRA modules, in model order)"
                    : " (layer indices)") + ", got " + brief(modules.toString()) + " (saved over "
                    + brief(root.path("layers").asText("?")) + ")");
        }

        // Expected tensors, from the layers, before the tensor file is opened.
        Map<String, Expected> expected = new LinkedHashMap<>();
        List<Expected[]> index = new ArrayList<>();
        Set<String> seenAdapters = new HashSet<>();
        for (JsonNode e : array(root, "states", jsonName)) {
            String where = jsonName + ": states[" + index.size() + "]";
            if (!e.isObject()) {
                throw new AdapterFormatException(where + ": expected an object, got " + brief(e));
            }
            NamedAdapter named = namedAdapter(e, where, layers, seenAdapters);
            String module = named.module();
            String adapterName = named.adapter();
            LoraTrainable layer = named.layer();
            where += " (module '" + module + "', adapter '" + adapterName + "')";
            String dtype = text(e, "dtype", where);
            if (!dtype.equals(dtypeName(layer.dataType()))) {
                throw new AdapterFormatException(where + ": dtype: expected " + dtypeName(layer.dataType())
                        + " (the layer's " + layer.dataType() + "), got " + brief(dtype));
            }
            LoraAdapter adapter = layer.adapter(adapterName);
            long[] shapeA = adapter.a().shape();
            long[] shapeB = adapter.b().shape();
            requireShape(e, "shape_A", shapeA, "A", where);
            requireShape(e, "shape_B", shapeB, "B", where);
            long sizeA = updater.stateSize(adapter.gradA().length());
            long sizeB = updater.stateSize(adapter.gradB().length());
            if (sizeA + sizeB == 0) {
                throw new AdapterFormatException(where + ": updater " + updater + " keeps no state, but the file "
                        + "lists state for it");
            }
            String keyA = text(e, "lora_A", where);
            String keyB = text(e, "lora_B", where);
            if (adapter.isDora() != e.has(MAGNITUDE)) {
                throw new AdapterFormatException(where + ": " + (adapter.isDora()
                        ? "the adapter is DoRA, but the file holds no state for its " + MAGNITUDE + " (saved for a "
                        + "plain LoRA adapter?)" : "the file holds state for a DoRA " + MAGNITUDE + ", but the adapter "
                        + "is plain LoRA"));
            }
            Expected[] pair = adapter.isDora()
                    ? new Expected[] {new Expected(keyA, module, adapterName, "lora_A", layer.dataType(), sizeA, shapeA),
                        new Expected(keyB, module, adapterName, "lora_B", layer.dataType(), sizeB, shapeB),
                        new Expected(text(e, MAGNITUDE, where), module, adapterName, MAGNITUDE, layer.dataType(),
                                updater.stateSize(adapter.gradMagnitude().length()), adapter.magnitude().shape())}
                    : new Expected[] {new Expected(keyA, module, adapterName, "lora_A", layer.dataType(), sizeA, shapeA),
                        new Expected(keyB, module, adapterName, "lora_B", layer.dataType(), sizeB, shapeB)};
            for (Expected x : pair) {
                if (expected.put(x.key(), x) != null) {
                    throw new AdapterFormatException(where + ": tensor key '" + brief(x.key()) + "' is used twice");
                }
            }
            index.add(pair);
        }

        Map<String, INDArray> tensors = readTensors(dir.resolve(LoraTrainer.STATE_TENSORS_FILE), expected, saveId);
        int[] parts = UpdaterRules.nonNegativeParts(updater);
        List<Saved> states = new ArrayList<>();
        for (Expected[] pair : index) {
            INDArray a = tensors.get(pair[0].key());
            INDArray b = tensors.get(pair[1].key());
            for (Expected x : pair) {
                String problem = stateProblem(tensors.get(x.key()), parts, updater);
                if (problem != null) {
                    throw new AdapterFormatException(LoraTrainer.STATE_TENSORS_FILE + ": tensor '" + brief(x.key())
                            + "' (module '" + x.module() + "', adapter '" + x.adapter() + "', " + x.param() + "): "
                            + problem + "; every step from this state would fail");
                }
            }
            INDArray m = pair.length > 2 ? tensors.get(pair[2].key()) : null;
            states.add(new Saved(pair[0].module(), pair[0].adapter(), pair[0].shape(), pair[1].shape(), a, b, m));
        }
        return new Loaded(new Settings(updater, clip, wd, iteration, epoch, modules, overModel), states,
                steps(root, layers, iteration, jsonName));
    }

    /**
     * The optional {@code adapter_steps} index: each adapter's own step count, at most the trainer's iteration, for
     * an adapter of a listed module, once each; null when the file has none (written before it existed).
     */
    private static List<Steps> steps(JsonNode root, Map<String, LoraTrainable> layers, int iteration, String jsonName)
            throws AdapterFormatException {
        if (!root.has("adapter_steps")) {
            return null;
        }
        List<Steps> out = new ArrayList<>();
        Set<String> seen = new HashSet<>();
        for (JsonNode e : array(root, "adapter_steps", jsonName)) {
            String where = jsonName + ": adapter_steps[" + out.size() + "]";
            if (!e.isObject()) {
                throw new AdapterFormatException(where + ": expected an object, got " + brief(e));
            }
            NamedAdapter named = namedAdapter(e, where, layers, seen);
            String module = named.module();
            String adapterName = named.adapter();
            int steps = nonNegativeInt(e, "steps", where);
            if (steps > iteration) {
                throw new AdapterFormatException(where + ": steps: expected at most the trainer's iteration "
                        + iteration + " (an adapter steps at most once per step), got " + steps);
            }
            out.add(new Steps(module, adapterName, steps));
        }
        return out;
    }

    /** A module of the trainer and one of its adapters, as an entry of the state file names them. */
    private record NamedAdapter(String module, String adapter, LoraTrainable layer) {
    }

    /**
     * The module and adapter entry {@code e} names (fields {@code "module"}, {@code "adapter"}): a layer of the
     * trainer, an adapter it has, not named before by an entry of the same list ({@code seen}, updated).
     */
    private static NamedAdapter namedAdapter(JsonNode e, String where, Map<String, LoraTrainable> layers,
                                             Set<String> seen) throws AdapterFormatException {
        String module = text(e, "module", where);
        String adapterName = text(e, "adapter", where);
        LoraTrainable layer = layers.get(module);
        if (layer == null) {
            throw new AdapterFormatException(where + ": module '" + brief(module) + "' is not one of "
                    + brief(layers.keySet().toString()));
        }
        if (!layer.adapterNames().contains(adapterName)) {
            throw new AdapterFormatException(where + ": module '" + module + "' has no adapter '"
                    + brief(adapterName) + "'; its adapters: " + layer.adapterNames()
                    + " (load the adapter files first)");
        }
        if (!seen.add(module + "\u0000" + adapterName)) {
            throw new AdapterFormatException(where + ": module '" + module + "', adapter '" + adapterName
                    + "' is listed twice");
        }
        return new NamedAdapter(module, adapterName, layer);
    }

    /** One tensor the index promises: its key, whose state it is, type, length and the shape of its parameter. */
    private record Expected(String key, String module, String adapter, String param, DataType type, long length,
                            long[] shape) {
    }

    private static void requireShape(JsonNode e, String field, long[] expected, String param, String where)
            throws AdapterFormatException {
        JsonNode s = e.get(field);
        boolean ok = s != null && s.isArray() && s.size() == expected.length;
        for (int i = 0; ok && i < expected.length; i++) {
            ok = s.get(i).isIntegralNumber() && s.get(i).canConvertToLong() && s.get(i).longValue() == expected[i];
        }
        if (!ok) {
            throw new AdapterFormatException(where + ": " + field + ": expected " + Arrays.toString(expected) + " (the "
                    + "layer's " + param + " now), got " + brief(s) + "; this state was saved for an adapter of "
                    + "other shapes, and resuming it would apply moments of one parameter to another");
        }
    }

    /**
     * Why a state tensor cannot be resumed, or null: a NaN or infinity anywhere, or a negative value in a part the
     * updater takes the square root of.
     */
    private static String stateProblem(INDArray state, int[] parts, IUpdater updater) {
        double[] v = state.dup('c').data().asDouble();
        long partLength = v.length / parts[0];
        for (int i = 0; i < v.length; i++) {
            if (!Double.isFinite(v[i])) {
                return "expected finite updater state, found " + v[i] + " at element " + i;
            }
            if (v[i] < 0 && i / partLength >= parts[1]) {
                return "expected element " + i + " >= 0 (part " + (i / partLength + 1) + " of " + parts[0] + " of "
                        + updater.getClass().getSimpleName() + "'s state, a squared-gradient average), found " + v[i];
            }
        }
        return null;
    }

    /**
     * The updater: the tree checked node by node (exact class names, bounded size) before ND4J's Jackson maps it,
     * then its values ({@link UpdaterRules}) at the resumed iteration and epoch.
     */
    private static IUpdater updater(JsonNode node, String where, int iteration, int epoch)
            throws AdapterFormatException {
        if (node == null || !node.isObject()) {
            throw new AdapterFormatException(where + ": expected ND4J's JSON of an IUpdater (an object with \""
                    + CLASS_KEY + "\"), got " + brief(node));
        }
        checkClasses(node, where, new int[] {0});
        IUpdater u;
        try {
            u = ND4J.readValue(JSON.writeValueAsBytes(node), IUpdater.class);
        } catch (IOException | IllegalArgumentException e) {
            throw new AdapterFormatException(where + ": expected one of ND4J's updaters (org.nd4j.linalg.learning"
                    + ".config, schedules from org.nd4j.linalg.schedule) with its own fields, got "
                    + brief(node.path(CLASS_KEY).asText("no " + CLASS_KEY)) + ": " + brief(e.getMessage()), e);
        }
        if (u == null) {
            throw new AdapterFormatException(where + ": expected an IUpdater, got null");
        }
        String problem = UpdaterRules.problem(u, iteration, epoch);
        if (problem != null) {
            throw new AdapterFormatException(where + ": " + problem + "; every step would fail with it");
        }
        return u;
    }

    /** Every {@code @class} in the tree must be one of {@link UpdaterRules#CLASSES}; no class is loaded here. */
    private static void checkClasses(JsonNode node, String where, int[] count) throws AdapterFormatException {
        if (++count[0] > MAX_UPDATER_NODES) {
            throw new AdapterFormatException(where + ": more than " + MAX_UPDATER_NODES + " JSON values; expected an "
                    + "updater with its schedules");
        }
        if (node.isObject()) {
            JsonNode cls = node.get(CLASS_KEY);
            if (cls != null && !(cls.isTextual() && UpdaterRules.CLASSES.contains(cls.textValue()))) {
                throw new AdapterFormatException(where + ": expected one of ND4J's updaters (org.nd4j.linalg.learning"
                        + ".config, schedules from org.nd4j.linalg.schedule): " + CLASS_KEY + " must be one of "
                        + new TreeSet<>(UpdaterRules.CLASSES) + ", got " + brief(cls) + "; no class was loaded");
            }
            for (Map.Entry<String, JsonNode> f : node.properties()) {
                checkClasses(f.getValue(), where + "." + brief(f.getKey()), count);
            }
        } else if (node.isArray()) {
            for (JsonNode e : node) {
                checkClasses(e, where, count);
            }
        }
    }

    /** Admits exactly {@link UpdaterRules#CLASSES}, by name, before any class is looked up. */
    private static final class ExactClassNames extends PolymorphicTypeValidator.Base {
        private static final long serialVersionUID = 1L;

        @Override
        public Validity validateSubClassName(MapperConfig<?> config,
                                             org.nd4j.shade.jackson.databind.JavaType baseType, String subClassName) {
            return UpdaterRules.CLASSES.contains(subClassName) ? Validity.ALLOWED : Validity.DENIED;
        }

        @Override
        public Validity validateSubType(MapperConfig<?> config, org.nd4j.shade.jackson.databind.JavaType baseType,
                                        org.nd4j.shade.jackson.databind.JavaType subType) {
            return UpdaterRules.CLASSES.contains(subType.getRawClass().getName()) ? Validity.ALLOWED : Validity.DENIED;
        }
    }

    /**
     * Reads the tensor file through {@link SafeFiles#readSafetensors}, checking its header against {@code expected}
     * (the same keys, each {@code [length]} of the layer's type) and its save id before any tensor is decoded.
     */
    private static Map<String, INDArray> readTensors(Path file, Map<String, Expected> expected, String saveId)
            throws IOException {
        String what = LoraTrainer.STATE_TENSORS_FILE;
        return SafeFiles.readSafetensors(file, (metadata, declared) -> {
            String fileId = metadata.get("save_id");
            if (!saveId.equals(fileId)) {
                throw new AdapterFormatException(what + ": save_id: expected " + brief(saveId) + " (the id in "
                        + LoraTrainer.STATE_CONFIG_FILE + "), got " + (fileId == null ? null : brief(fileId))
                        + "; the two files come from different saves (an interrupted saveState?): save again");
            }
            for (String key : declared.keySet()) {
                if (!expected.containsKey(key)) {
                    throw new AdapterFormatException(what + ": tensor '" + brief(key) + "' is not listed in "
                            + LoraTrainer.STATE_CONFIG_FILE);
                }
            }
            for (Expected x : expected.values()) {
                SafeFiles.TensorInfo t = declared.get(x.key());
                if (t == null) {
                    throw new AdapterFormatException(what + ": tensor '" + brief(x.key()) + "' listed in "
                            + LoraTrainer.STATE_CONFIG_FILE + " is missing");
                }
                String where = what + ": tensor '" + brief(x.key()) + "'";
                if (!t.dtype().equals(dtypeName(x.type()))) {
                    throw new AdapterFormatException(where + ": dtype: expected " + dtypeName(x.type()) + ", got "
                            + t.dtype());
                }
                if (!Arrays.equals(t.shape(), new long[] {x.length()})) {
                    throw new AdapterFormatException(where + ": shape: expected [" + x.length() + "] (updater state "
                            + "of the layer's adapter), got " + Arrays.toString(t.shape()));
                }
            }
        });
    }

    // ---------------------------------------------------------------- helpers

    /**
     * Parses {@code bytes} within the limits: a first streaming pass counts tokens (and meets the depth, number and
     * string limits) without building anything, then the tree is built.
     */
    private static JsonNode parse(byte[] bytes, String what) throws AdapterFormatException {
        try {
            try (JsonParser p = JSON.createParser(bytes)) {
                long tokens = 0;
                while (p.nextToken() != null) {
                    if (++tokens > MAX_TOKENS) {
                        throw new AdapterFormatException(what + ": more than " + MAX_TOKENS + " JSON tokens; expected "
                                + "a trainer state (about 25 per adapter)");
                    }
                }
            }
            JsonNode n = JSON.readTree(bytes);
            if (n == null || n.isMissingNode()) {
                throw new AdapterFormatException(what + ": expected JSON, the file is empty");
            }
            return n;
        } catch (StreamConstraintsException e) {
            throw new AdapterFormatException(what + ": exceeds a limit of this reader (nesting at most " + MAX_DEPTH
                    + " deep, numbers of at most " + MAX_NUMBER_CHARS + " characters): " + e.getOriginalMessage(), e);
        } catch (JacksonException e) {
            throw new AdapterFormatException(what + ": expected valid JSON: " + e.getOriginalMessage(), e);
        } catch (AdapterFormatException e) {
            throw e;
        } catch (IOException e) {
            throw new AdapterFormatException(what + ": expected valid JSON: " + e.getMessage(), e);
        }
    }

    /** A JSON value for a message: scalars as written, cut to 100 characters; containers by kind and size only. */
    static String brief(JsonNode n) {
        if (n == null) {
            return "nothing";
        }
        if (n.isArray()) {
            boolean flat = n.size() <= 16;
            for (JsonNode e : n) {
                flat &= e.isValueNode();
            }
            if (!flat) {
                return "an array of " + n.size() + " values";
            }
            List<String> values = new ArrayList<>();
            n.forEach(e -> values.add(e.toString()));
            return brief(values.toString());
        }
        if (n.isObject()) {
            return "an object of " + n.size() + " fields";
        }
        return brief(n.toString());
    }

    /** {@code s} cut to 100 characters. */
    static String brief(String s) {
        return s == null || s.length() <= 100 ? s : s.substring(0, 100) + "... (" + s.length() + " characters)";
    }

    private static String text(JsonNode node, String field, String where) throws AdapterFormatException {
        JsonNode v = node.get(field);
        if (v == null || !v.isTextual()) {
            throw new AdapterFormatException(where + ": " + field + ": expected a string, got " + brief(v));
        }
        return v.asText();
    }

    private static JsonNode array(JsonNode node, String field, String where) throws AdapterFormatException {
        JsonNode v = node.get(field);
        if (v == null || !v.isArray()) {
            throw new AdapterFormatException(where + ": " + field + ": expected an array, got " + brief(v));
        }
        return v;
    }

    private static int nonNegativeInt(JsonNode node, String field, String where) throws AdapterFormatException {
        JsonNode v = node.get(field);
        if (v == null || !v.isIntegralNumber() || !v.canConvertToInt() || v.asInt() < 0) {
            throw new AdapterFormatException(where + ": " + field + ": expected an integer in [0, "
                    + Integer.MAX_VALUE + "], got " + brief(v));
        }
        return v.asInt();
    }

    private static double nonNegativeFinite(JsonNode node, String field, String where) throws AdapterFormatException {
        JsonNode v = node.get(field);
        if (v == null || !v.isNumber() || !Double.isFinite(v.asDouble()) || v.asDouble() < 0) {
            throw new AdapterFormatException(where + ": " + field + ": expected a finite number >= 0, got " + brief(v));
        }
        return v.asDouble();
    }

    private static String dtypeName(DataType type) {
        return type == DataType.DOUBLE ? "F64" : "F32";
    }
}
