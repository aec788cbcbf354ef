package io.github.lora4j.train;

import io.github.lora4j.Lora4j;
import io.github.lora4j.LoraAdapter;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.io.AdapterFormatException;
import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.channels.SeekableByteChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.BasicFileAttributes;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.UUID;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;
import org.nd4j.linalg.learning.config.IUpdater;
import org.nd4j.shade.jackson.core.JsonProcessingException;
import org.nd4j.shade.jackson.core.StreamReadFeature;
import org.nd4j.shade.jackson.databind.DeserializationFeature;
import org.nd4j.shade.jackson.databind.JsonNode;
import org.nd4j.shade.jackson.databind.json.JsonMapper;
import org.nd4j.shade.jackson.databind.jsontype.BasicPolymorphicTypeValidator;
import org.nd4j.shade.jackson.databind.node.ArrayNode;
import org.nd4j.shade.jackson.databind.node.ObjectNode;

/**
 * The two files of a saved {@link LoraTrainer}: {@value LoraTrainer#STATE_CONFIG_FILE} (settings, counters, the index
 * of the state tensors) and {@value LoraTrainer#STATE_TENSORS_FILE} (the tensors, safetensors layout: an unsigned
 * 64-bit little-endian header length, a JSON header, the little-endian data tiled without holes).
 *
 * <p>Uses ND4J's shaded Jackson, because ND4J's updater and schedule classes carry its annotations ({@code @class}
 * type ids); a type validator lets only ND4J's own updater and schedule packages be instantiated from a file.
 */
final class TrainerStateFiles {

    static final String FORMAT = "lora4j-trainer-state";
    static final int FORMAT_VERSION = 1;
    /** Largest {@value LoraTrainer#STATE_CONFIG_FILE} and largest tensor-file header read: 8 MiB each. */
    static final int MAX_JSON_BYTES = 8 << 20;

    private static final JsonMapper JSON = JsonMapper.builder()
            .enable(StreamReadFeature.STRICT_DUPLICATE_DETECTION)
            .enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS)
            .enable(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES)
            .polymorphicTypeValidator(BasicPolymorphicTypeValidator.builder()
                    .allowIfSubType("org.nd4j.linalg.learning.config.")
                    .allowIfSubType("org.nd4j.linalg.schedule.")
                    .build())
            .build();

    private TrainerStateFiles() {
    }

    /** The trainer's settings and counters, and the names of its layers in order. */
    record Settings(IUpdater updater, double clipGradientNorm, double weightDecay, int iteration, int epoch,
                    List<String> modules, boolean overModel) {
    }

    /** One adapter's updater state: 1-D copies of A's and B's parts, in the layer's data type. */
    record Saved(String module, String adapter, INDArray stateA, INDArray stateB) {
    }

    /** What {@link #read} found, checked against the layers. */
    record Loaded(Settings settings, List<Saved> states) {
    }

    // ---------------------------------------------------------------- write

    static void write(Path dir, Settings s, List<Saved> states) throws IOException {
        String saveId = UUID.randomUUID().toString();
        ObjectNode root = JSON.createObjectNode();
        root.put("format", FORMAT);
        root.put("format_version", FORMAT_VERSION);
        root.put("lora4j_version", Lora4j.version());
        root.put("save_id", saveId);
        try {
            root.set("updater", JSON.valueToTree(s.updater()));
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("updater " + s.updater() + " cannot be saved as JSON: "
                    + e.getMessage(), e);
        }
        root.put("clip_gradient_norm", s.clipGradientNorm());
        root.put("weight_decay", s.weightDecay());
        root.put("iteration", s.iteration());
        root.put("epoch", s.epoch());
        root.put("layers", s.overModel() ? "model modules" : "layer indices");
        ArrayNode modules = root.putArray("modules");
        s.modules().forEach(modules::add);
        ArrayNode index = root.putArray("states");
        Map<String, INDArray> tensors = new LinkedHashMap<>();
        for (Saved st : states) {
            String keyA = st.module() + "/" + st.adapter() + "/lora_A";
            String keyB = st.module() + "/" + st.adapter() + "/lora_B";
            if (tensors.put(keyA, st.stateA()) != null || tensors.put(keyB, st.stateB()) != null) {
                throw new IllegalArgumentException("two saved states share the key '" + keyA + "' or '" + keyB
                        + "'; module paths and adapter names containing '/' can collide, rename one");
            }
            ObjectNode e = index.addObject();
            e.put("module", st.module());
            e.put("adapter", st.adapter());
            e.put("dtype", dtypeName(st.stateA().dataType()));
            e.put("lora_A", keyA);
            e.put("lora_B", keyB);
        }
        byte[] json = JSON.writerWithDefaultPrettyPrinter().writeValueAsBytes(root);
        ByteBuffer safetensors = encode(tensors, saveId);

        Files.createDirectories(dir);
        Path tensorTarget = dir.resolve(LoraTrainer.STATE_TENSORS_FILE);
        Path jsonTarget = dir.resolve(LoraTrainer.STATE_CONFIG_FILE);
        for (Path target : List.of(tensorTarget, jsonTarget)) {
            if (Files.exists(target) && !Files.isRegularFile(target)) {
                throw new IOException("cannot replace " + target + ": expected a regular file or nothing, found "
                        + "a directory or special file");
            }
        }
        Path tensorTmp = Files.createTempFile(dir, "." + LoraTrainer.STATE_TENSORS_FILE + ".", ".tmp");
        Path jsonTmp = null;
        try {
            writeAndSync(tensorTmp, safetensors);
            jsonTmp = Files.createTempFile(dir, "." + LoraTrainer.STATE_CONFIG_FILE + ".", ".tmp");
            writeAndSync(jsonTmp, ByteBuffer.wrap(json));
            // Tensors first: a crash between the renames leaves new tensors with the old JSON, whose save id
            // differs, so read refuses the pair instead of mixing two saves.
            Files.move(tensorTmp, tensorTarget, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
            Files.move(jsonTmp, jsonTarget, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        } finally {
            Files.deleteIfExists(tensorTmp);
            if (jsonTmp != null) {
                Files.deleteIfExists(jsonTmp);
            }
        }
    }

    private static void writeAndSync(Path file, ByteBuffer bytes) throws IOException {
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.WRITE, StandardOpenOption.TRUNCATE_EXISTING)) {
            while (bytes.hasRemaining()) {
                ch.write(bytes);
            }
            ch.force(true);
        }
    }

    /** Header length, header (metadata with the save id, one entry per tensor), space padding to 8, data (LE). */
    private static ByteBuffer encode(Map<String, INDArray> tensors, String saveId) throws IOException {
        ObjectNode header = JSON.createObjectNode();
        ObjectNode meta = header.putObject("__metadata__");
        meta.put("format", FORMAT);
        meta.put("save_id", saveId);
        long offset = 0;
        for (Map.Entry<String, INDArray> t : tensors.entrySet()) {
            INDArray a = t.getValue();
            long bytes = a.length() * a.dataType().width();
            ObjectNode e = header.putObject(t.getKey());
            e.put("dtype", dtypeName(a.dataType()));
            e.putArray("shape").add(a.length());
            e.putArray("data_offsets").add(offset).add(offset + bytes);
            offset += bytes;
        }
        byte[] h = JSON.writeValueAsBytes(header);
        int padded = (h.length + 7) / 8 * 8;
        ByteBuffer buf = ByteBuffer.allocate(Math.toIntExact(8 + padded + offset)).order(ByteOrder.LITTLE_ENDIAN);
        buf.putLong(padded).put(h);
        for (int i = h.length; i < padded; i++) {
            buf.put((byte) ' ');
        }
        for (INDArray a : tensors.values()) {
            INDArray c = a.dup('c');
            int n = Math.toIntExact(c.length());
            if (c.dataType() == DataType.DOUBLE) {
                buf.asDoubleBuffer().put(c.data().asNioDouble().limit(n));
                buf.position(buf.position() + 8 * n);
            } else {
                buf.asFloatBuffer().put(c.data().asNioFloat().limit(n));
                buf.position(buf.position() + 4 * n);
            }
        }
        return buf.flip();
    }

    // ---------------------------------------------------------------- read

    /** Reads and checks both files against {@code layers} (name to layer, in the trainer's order). */
    static Loaded read(Path dir, Map<String, LoraLinear> layers, boolean overModel) throws IOException {
        String jsonName = LoraTrainer.STATE_CONFIG_FILE;
        JsonNode root = parse(readBounded(dir.resolve(jsonName), MAX_JSON_BYTES), jsonName);
        if (!root.isObject()) {
            throw new AdapterFormatException(jsonName + ": expected a JSON object, got " + root.getNodeType());
        }
        String format = text(root, "format", jsonName);
        if (!FORMAT.equals(format)) {
            throw new AdapterFormatException(jsonName + ": format: expected \"" + FORMAT + "\", got \"" + format + "\"");
        }
        int version = nonNegativeInt(root, "format_version", jsonName);
        if (version != FORMAT_VERSION) {
            throw new AdapterFormatException(jsonName + ": format_version: expected " + FORMAT_VERSION + ", got "
                    + version + " (written by lora4j " + root.path("lora4j_version").asText("?") + ")");
        }
        String saveId = text(root, "save_id", jsonName);
        IUpdater updater = updater(root, jsonName);
        double clip = nonNegativeFinite(root, "clip_gradient_norm", jsonName);
        double wd = nonNegativeFinite(root, "weight_decay", jsonName);
        int iteration = nonNegativeInt(root, "iteration", jsonName);
        int epoch = nonNegativeInt(root, "epoch", jsonName);

        List<String> modules = new ArrayList<>();
        for (JsonNode m : array(root, "modules", jsonName)) {
            if (!m.isTextual()) {
                throw new AdapterFormatException(jsonName + ": modules: expected strings, got " + m);
            }
            modules.add(m.asText());
        }
        List<String> expectedModules = new ArrayList<>(layers.keySet());
        if (!modules.equals(expectedModules)) {
            throw new AdapterFormatException(jsonName + ": modules: expected the trainer's layers " + expectedModules
                    + (overModel ? " (the model's LoRA modules, in model order)" : " (layer indices)") + ", got "
                    + modules + " (saved over " + root.path("layers").asText("?") + ")");
        }

        // Expected tensors: key -> layer data type and length, from the layers, before the tensor file is opened.
        Map<String, Expected> expected = new LinkedHashMap<>();
        List<String[]> index = new ArrayList<>();
        Set<String> seenAdapters = new HashSet<>();
        for (JsonNode e : array(root, "states", jsonName)) {
            String where = jsonName + ": states[" + index.size() + "]";
            if (!e.isObject()) {
                throw new AdapterFormatException(where + ": expected an object, got " + e);
            }
            String module = text(e, "module", where);
            String adapterName = text(e, "adapter", where);
            LoraLinear layer = layers.get(module);
            if (layer == null) {
                throw new AdapterFormatException(where + ": module '" + module + "' is not one of " + modules);
            }
            if (!layer.adapterNames().contains(adapterName)) {
                throw new AdapterFormatException(where + ": module '" + module + "' has no adapter '" + adapterName
                        + "'; its adapters: " + layer.adapterNames() + " (load the adapter files first)");
            }
            if (!seenAdapters.add(module + "\u0000" + adapterName)) {
                throw new AdapterFormatException(where + ": module '" + module + "', adapter '" + adapterName
                        + "' is listed twice");
            }
            String dtype = text(e, "dtype", where);
            if (!dtype.equals(dtypeName(layer.dataType()))) {
                throw new AdapterFormatException(where + ": dtype: expected " + dtypeName(layer.dataType())
                        + " (the layer's " + layer.dataType() + "), got " + dtype);
            }
            LoraAdapter adapter = layer.adapter(adapterName);
            long sizeA = updater.stateSize(adapter.gradA().length());
            long sizeB = updater.stateSize(adapter.gradB().length());
            if (sizeA + sizeB == 0) {
                throw new AdapterFormatException(where + ": updater " + updater + " keeps no state, but the file "
                        + "lists state for module '" + module + "'");
            }
            String keyA = text(e, "lora_A", where);
            String keyB = text(e, "lora_B", where);
            for (String[] kv : new String[][] {{keyA, "A"}, {keyB, "B"}}) {
                long size = kv[1].equals("A") ? sizeA : sizeB;
                if (expected.put(kv[0], new Expected(layer.dataType(), size)) != null) {
                    throw new AdapterFormatException(where + ": tensor key '" + kv[0] + "' is used twice");
                }
            }
            index.add(new String[] {module, adapterName, keyA, keyB});
        }

        Map<String, INDArray> tensors = readTensors(dir.resolve(LoraTrainer.STATE_TENSORS_FILE), expected, saveId);
        List<Saved> states = new ArrayList<>();
        for (String[] i : index) {
            states.add(new Saved(i[0], i[1], tensors.get(i[2]), tensors.get(i[3])));
        }
        return new Loaded(new Settings(updater, clip, wd, iteration, epoch, modules, overModel), states);
    }

    private record Expected(DataType type, long length) {
    }

    private static IUpdater updater(JsonNode root, String where) throws AdapterFormatException {
        JsonNode node = root.get("updater");
        if (node == null || !node.isObject()) {
            throw new AdapterFormatException(where + ": updater: expected ND4J's JSON of an IUpdater (an object with "
                    + "\"@class\"), got " + node);
        }
        try {
            IUpdater u = JSON.treeToValue(node, IUpdater.class);
            if (u == null) {
                throw new AdapterFormatException(where + ": updater: expected an IUpdater, got null");
            }
            return u;
        } catch (JsonProcessingException | IllegalArgumentException e) {
            throw new AdapterFormatException(where + ": updater: expected one of ND4J's updaters "
                    + "(org.nd4j.linalg.learning.config, schedules from org.nd4j.linalg.schedule), got " + node
                    + ": " + e.getMessage(), e);
        }
    }

    /** Reads the tensor file, checking its header against {@code expected} before any data is read. */
    private static Map<String, INDArray> readTensors(Path file, Map<String, Expected> expected, String saveId)
            throws IOException {
        String what = LoraTrainer.STATE_TENSORS_FILE;
        requireRegularFile(file, what);
        long dataLength = 0;
        for (Expected e : expected.values()) {
            dataLength += e.length() * e.type().width();
        }
        try (SeekableByteChannel ch = Files.newByteChannel(file, StandardOpenOption.READ)) {
            long size = ch.size();
            if (size < 8) {
                throw new AdapterFormatException(what + ": expected at least 8 bytes (the header length), got " + size);
            }
            ByteBuffer lenBuf = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN);
            readFully(ch, lenBuf, 0, what);
            long headerLength = lenBuf.getLong(0);
            if (headerLength < 2 || headerLength > MAX_JSON_BYTES || headerLength > size - 8) {
                throw new AdapterFormatException(what + ": header length: expected 2.." + Math.min(MAX_JSON_BYTES,
                        size - 8) + " bytes (at most " + MAX_JSON_BYTES + " and within the file of " + size
                        + " bytes), got " + Long.toUnsignedString(headerLength));
            }
            if (size - 8 - headerLength != dataLength) {
                throw new AdapterFormatException(what + ": data: expected exactly " + dataLength + " bytes (the "
                        + "updater state the model's adapters need), got " + (size - 8 - headerLength));
            }
            ByteBuffer headerBuf = ByteBuffer.allocate((int) headerLength);
            readFully(ch, headerBuf, 8, what);
            JsonNode header = parse(headerBuf.array(), what + " header");
            if (!header.isObject()) {
                throw new AdapterFormatException(what + ": header: expected a JSON object, got " + header.getNodeType());
            }
            JsonNode meta = header.get("__metadata__");
            String fileId = meta == null ? null : meta.path("save_id").asText(null);
            if (!saveId.equals(fileId)) {
                throw new AdapterFormatException(what + ": save_id: expected " + saveId + " (the id in "
                        + LoraTrainer.STATE_CONFIG_FILE + "), got " + fileId + "; the two files come from different "
                        + "saves (an interrupted saveState?): save again");
            }
            Map<String, long[]> offsets = new LinkedHashMap<>();
            for (Iterator<Map.Entry<String, JsonNode>> it = header.fields(); it.hasNext(); ) {
                Map.Entry<String, JsonNode> f = it.next();
                if (f.getKey().equals("__metadata__")) {
                    continue;
                }
                Expected e = expected.get(f.getKey());
                if (e == null) {
                    throw new AdapterFormatException(what + ": tensor '" + f.getKey() + "' is not listed in "
                            + LoraTrainer.STATE_CONFIG_FILE);
                }
                offsets.put(f.getKey(), checkEntry(f.getKey(), f.getValue(), e, what));
            }
            for (String key : expected.keySet()) {
                if (!offsets.containsKey(key)) {
                    throw new AdapterFormatException(what + ": tensor '" + key + "' listed in "
                            + LoraTrainer.STATE_CONFIG_FILE + " is missing");
                }
            }
            List<Map.Entry<String, long[]>> sorted = new ArrayList<>(offsets.entrySet());
            sorted.sort(Map.Entry.comparingByValue((x, y) -> Long.compare(x[0], y[0])));
            long next = 0;
            for (Map.Entry<String, long[]> e : sorted) {
                if (e.getValue()[0] != next) {
                    throw new AdapterFormatException(what + ": tensor '" + e.getKey() + "': expected data_offsets to "
                            + "start at " + next + " (tensors tile the data without gaps or overlaps), got "
                            + e.getValue()[0]);
                }
                next = e.getValue()[1];
            }
            ByteBuffer data = ByteBuffer.allocate(Math.toIntExact(dataLength)).order(ByteOrder.LITTLE_ENDIAN);
            readFully(ch, data, 8 + headerLength, what);
            Map<String, INDArray> out = new LinkedHashMap<>();
            for (Map.Entry<String, long[]> e : offsets.entrySet()) {
                Expected x = expected.get(e.getKey());
                int n = Math.toIntExact(x.length());
                data.position(Math.toIntExact(e.getValue()[0]));
                INDArray a;
                if (x.type() == DataType.DOUBLE) {
                    double[] v = new double[n];
                    data.asDoubleBuffer().get(v);
                    a = Nd4j.createFromArray(v);
                } else {
                    float[] v = new float[n];
                    data.asFloatBuffer().get(v);
                    a = Nd4j.createFromArray(v);
                }
                out.put(e.getKey(), a);
            }
            return out;
        }
    }

    /** {@code [begin, end]} of a header entry, after checking dtype, shape and offsets against what is expected. */
    private static long[] checkEntry(String key, JsonNode node, Expected e, String what) throws AdapterFormatException {
        String where = what + ": tensor '" + key + "'";
        if (!node.isObject()) {
            throw new AdapterFormatException(where + ": expected an object, got " + node);
        }
        String dtype = text(node, "dtype", where);
        if (!dtype.equals(dtypeName(e.type()))) {
            throw new AdapterFormatException(where + ": dtype: expected " + dtypeName(e.type()) + ", got " + dtype);
        }
        JsonNode shape = node.get("shape");
        if (shape == null || !shape.isArray() || shape.size() != 1 || !shape.get(0).canConvertToLong()
                || shape.get(0).asLong() != e.length()) {
            throw new AdapterFormatException(where + ": shape: expected [" + e.length() + "] (updater state of the "
                    + "layer's adapter), got " + shape);
        }
        JsonNode off = node.get("data_offsets");
        long bytes = e.length() * e.type().width();
        if (off == null || !off.isArray() || off.size() != 2 || !off.get(0).canConvertToLong()
                || !off.get(1).canConvertToLong() || off.get(0).asLong() < 0
                || off.get(1).asLong() - off.get(0).asLong() != bytes) {
            throw new AdapterFormatException(where + ": data_offsets: expected [begin, begin + " + bytes + "], got "
                    + off);
        }
        return new long[] {off.get(0).asLong(), off.get(1).asLong()};
    }

    // ---------------------------------------------------------------- helpers

    private static void requireRegularFile(Path file, String what) throws IOException {
        BasicFileAttributes attrs = Files.readAttributes(file, BasicFileAttributes.class);
        if (!attrs.isRegularFile()) {
            throw new AdapterFormatException(what + ": expected a regular file, found "
                    + (attrs.isDirectory() ? "a directory" : "a special file (FIFO, device or socket)") + " at " + file);
        }
    }

    /** The whole file, refused if it is not a regular file or holds more than {@code max} bytes. */
    private static byte[] readBounded(Path file, int max) throws IOException {
        String what = file.getFileName().toString();
        requireRegularFile(file, what);
        try (InputStream in = Files.newInputStream(file)) {
            byte[] bytes = in.readNBytes(max + 1);
            if (bytes.length > max) {
                throw new AdapterFormatException(what + ": expected at most " + max + " bytes, the file is larger");
            }
            return bytes;
        }
    }

    private static void readFully(SeekableByteChannel ch, ByteBuffer buf, long position, String what)
            throws IOException {
        ch.position(position);
        while (buf.hasRemaining()) {
            if (ch.read(buf) < 0) {
                throw new AdapterFormatException(what + ": expected " + buf.capacity() + " bytes at offset "
                        + position + ", the file ended early (truncated while being read?)");
            }
        }
    }

    private static JsonNode parse(byte[] bytes, String what) throws AdapterFormatException {
        try {
            JsonNode n = JSON.readTree(new String(bytes, StandardCharsets.UTF_8).strip());
            if (n == null || n.isMissingNode()) {
                throw new AdapterFormatException(what + ": expected JSON, the file is empty");
            }
            return n;
        } catch (JsonProcessingException e) {
            throw new AdapterFormatException(what + ": expected valid JSON: " + e.getOriginalMessage(), e);
        }
    }

    private static String text(JsonNode node, String field, String where) throws AdapterFormatException {
        JsonNode v = node.get(field);
        if (v == null || !v.isTextual()) {
            throw new AdapterFormatException(where + ": " + field + ": expected a string, got " + v);
        }
        return v.asText();
    }

    private static JsonNode array(JsonNode node, String field, String where) throws AdapterFormatException {
        JsonNode v = node.get(field);
        if (v == null || !v.isArray()) {
            throw new AdapterFormatException(where + ": " + field + ": expected an array, got " + v);
        }
        return v;
    }

    private static int nonNegativeInt(JsonNode node, String field, String where) throws AdapterFormatException {
        JsonNode v = node.get(field);
        if (v == null || !v.isIntegralNumber() || !v.canConvertToInt() || v.asInt() < 0) {
            throw new AdapterFormatException(where + ": " + field + ": expected an integer in [0, "
                    + Integer.MAX_VALUE + "], got " + v);
        }
        return v.asInt();
    }

    private static double nonNegativeFinite(JsonNode node, String field, String where) throws AdapterFormatException {
        JsonNode v = node.get(field);
        if (v == null || !v.isNumber() || !Double.isFinite(v.asDouble()) || v.asDouble() < 0) {
            throw new AdapterFormatException(where + ": " + field + ": expected a finite number >= 0, got " + v);
        }
        return v.asDouble();
    }

    private static String dtypeName(DataType type) {
        return type == DataType.DOUBLE ? "F64" : "F32";
    }
}
