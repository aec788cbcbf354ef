package io.github.lora4j.io;

import io.github.lora4j.LoraAdapter;
import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.WeightLayout;
import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.channels.SeekableByteChannel;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.TreeMap;
import java.util.TreeSet;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * Saves and loads LoRA adapters as PEFT does: a directory with {@code adapter_model.safetensors} (tensors
 * {@code base_model.model.<module>.lora_A.weight} {@code [r, in]} and {@code ...lora_B.weight} {@code [out, r]})
 * and {@code adapter_config.json}.
 *
 * <pre>{@code
 * Map<String, LoraLinear> modules = Map.of("model.layers.0.self_attn.q_proj", q, "model.layers.0.self_attn.v_proj", v);
 * PeftAdapterFiles.save(dir, modules, "default");                 // F32, atomic
 * PeftAdapterConfig cfg = PeftAdapterFiles.load(dir, modules, "sql"); // adds adapter "sql" to q and v
 * }</pre>
 *
 * <h2>Which tensors a file may hold</h2>
 * Only {@code base_model.model.<module>.lora_A.weight} and {@code .lora_B.weight}, both present for every
 * module, with {@code A [r, in]} and {@code B [out, r]} for the config's {@code r}. Any other tensor (PEFT's
 * {@code lora_embedding_A}, DoRA's {@code lora_magnitude_vector}, trained biases, {@code modules_to_save}
 * copies, keys still holding an adapter name such as {@code lora_A.default.weight}) is refused with an
 * {@link AdapterFormatException} naming it: ignoring it would load a different model than the one saved.
 *
 * <h2>Failure guarantees</h2>
 * {@link #read} and {@link #load} check the whole file (sizes against the real file length before allocating)
 * before anything is built; {@link #load} also checks every module against the model before changing any.
 * {@link #save} validates and writes both files to temporary files in the target directory, then renames each
 * over its target atomically ({@code ATOMIC_MOVE}); an error before the renames leaves existing files as they
 * were and removes the temporary files. The two renames are not one atomic step: a crash between them (a
 * window of one system call) can pair new weights with the old config; {@link #read} detects that when the
 * rank changed.
 */
public final class PeftAdapterFiles {

    /** File name of the tensors. */
    public static final String MODEL_FILE = "adapter_model.safetensors";
    /** File name of the config. */
    public static final String CONFIG_FILE = "adapter_config.json";

    static final String PREFIX = "base_model.model.";
    static final String A_SUFFIX = ".lora_A.weight";
    static final String B_SUFFIX = ".lora_B.weight";

    private PeftAdapterFiles() {
    }

    // ---------------------------------------------------------------- save

    /** {@link #save(Path, Map, String, DataType)} with {@link DataType#FLOAT} (F32), PEFT's usual file type. */
    public static void save(Path dir, Map<String, LoraLinear> modules, String adapterName) throws IOException {
        save(dir, modules, adapterName, DataType.FLOAT);
    }

    /**
     * Writes adapter {@code adapterName} of every module that has it to {@code dir} (created if absent) as
     * {@value #MODEL_FILE} and {@value #CONFIG_FILE}, replacing existing files atomically. Modules without that
     * adapter are skipped (a model may carry different adapters on different modules). {@code target_modules}
     * lists the last path component of each saved module, {@code fan_in_fan_out} follows the layers'
     * {@link WeightLayout}. Reads A and B under each layer's lock; do not train the adapter on another thread
     * meanwhile, or modules may be saved from different steps.
     *
     * @param modules  module path (e.g. {@code model.layers.0.self_attn.q_proj}) to layer
     * @param fileType FLOAT (F32), DOUBLE (F64), HALF (F16) or BFLOAT16 (BF16); narrowing rounds to nearest even
     * @throws IllegalArgumentException if no module has the adapter, the modules' adapters differ in rank, alpha,
     *                                  dropout or rsLoRA, or in weight layout (PEFT has one value of each), a
     *                                  module path is blank, or a value overflows {@code fileType}
     * @throws IOException              if writing fails; existing files are then left as they were
     */
    public static void save(Path dir, Map<String, LoraLinear> modules, String adapterName, DataType fileType)
            throws IOException {
        Objects.requireNonNull(dir, "dir must not be null");
        Objects.requireNonNull(modules, "modules must not be null");
        Objects.requireNonNull(adapterName, "adapterName must not be null");
        Safetensors.Dtype dtype = Safetensors.Dtype.of(Objects.requireNonNull(fileType, "fileType must not be null"));

        Map<String, INDArray> tensors = new TreeMap<>();
        TreeSet<String> targets = new TreeSet<>();
        LoraConfig first = null;
        String firstModule = null;
        WeightLayout layout = null;
        for (Map.Entry<String, LoraLinear> m : new TreeMap<>(modules).entrySet()) {
            String module = m.getKey();
            LoraLinear layer = Objects.requireNonNull(m.getValue(), "layer of module '" + module + "'");
            if (module.isBlank()) {
                throw new IllegalArgumentException("module paths must not be blank, got '" + module + "'");
            }
            if (!layer.adapterNames().contains(adapterName)) {
                continue;
            }
            LoraAdapter adapter = layer.adapter(adapterName);
            LoraConfig c = adapter.config();
            if (first == null) {
                first = c;
                firstModule = module;
                layout = layer.layout();
            } else {
                if (c.rank() != first.rank() || Double.compare(c.alpha(), first.alpha()) != 0
                        || Double.compare(c.dropout(), first.dropout()) != 0 || c.rsLora() != first.rsLora()) {
                    throw new IllegalArgumentException("adapter '" + adapterName + "' of module '" + module
                            + "' has " + describe(c) + ", but module '" + firstModule + "' has " + describe(first)
                            + "; a PEFT file holds one r, lora_alpha, lora_dropout and use_rslora for all modules");
                }
                if (layer.layout() != layout) {
                    throw new IllegalArgumentException("module '" + module + "' has weight layout " + layer.layout()
                            + ", but module '" + firstModule + "' has " + layout
                            + "; a PEFT file holds one fan_in_fan_out for all modules");
                }
            }
            // Copies: the live arrays may be updated by an optimizer after this call returns.
            tensors.put(PREFIX + module + A_SUFFIX, adapter.a().dup('c'));
            tensors.put(PREFIX + module + B_SUFFIX, adapter.b().dup('c'));
            int dot = module.lastIndexOf('.');
            targets.add(module.substring(dot + 1));
        }
        if (first == null) {
            throw new IllegalArgumentException("no module has adapter '" + adapterName + "'; expected at least one of "
                    + modules.size() + " modules to have it");
        }
        PeftAdapterConfig config = PeftAdapterConfig.from(first, new ArrayList<>(targets),
                layout == WeightLayout.IN_OUT);

        Files.createDirectories(dir);
        Path modelTarget = dir.resolve(MODEL_FILE);
        Path configTarget = dir.resolve(CONFIG_FILE);
        for (Path target : List.of(modelTarget, configTarget)) {
            if (Files.exists(target) && !Files.isRegularFile(target)) {
                throw new IOException("cannot replace " + target + ": expected a regular file or nothing, found "
                        + "a directory or special file");
            }
        }
        Path modelTmp = Files.createTempFile(dir, "." + MODEL_FILE + ".", ".tmp");
        Path configTmp = null;
        try {
            try (FileChannel ch = FileChannel.open(modelTmp, StandardOpenOption.WRITE,
                    StandardOpenOption.TRUNCATE_EXISTING)) {
                Safetensors.write(ch, tensors, Map.of("format", "pt"), dtype);
                ch.force(true);
            }
            configTmp = Files.createTempFile(dir, "." + CONFIG_FILE + ".", ".tmp");
            try (FileChannel ch = FileChannel.open(configTmp, StandardOpenOption.WRITE,
                    StandardOpenOption.TRUNCATE_EXISTING)) {
                ch.write(java.nio.ByteBuffer.wrap(config.toJson()));
                ch.force(true);
            }
            // ATOMIC_MOVE is a rename(2) on POSIX: readers see the old file or the new one, never a mix.
            Files.move(modelTmp, modelTarget, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
            Files.move(configTmp, configTarget, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        } finally {
            Files.deleteIfExists(modelTmp);
            if (configTmp != null) {
                Files.deleteIfExists(configTmp);
            }
        }
    }

    private static String describe(LoraConfig c) {
        return "r=" + c.rank() + ", alpha=" + c.alpha() + ", dropout=" + c.dropout() + ", rsLora=" + c.rsLora();
    }

    // ---------------------------------------------------------------- read

    /**
     * Reads and validates the adapter in {@code dir} without touching any model.
     *
     * @throws AdapterFormatException if either file is corrupt, hostile or unsupported (see the class comment)
     * @throws NoSuchFileException    if a file is missing
     */
    public static PeftAdapter read(Path dir) throws IOException {
        Objects.requireNonNull(dir, "dir must not be null");
        Path configFile = dir.resolve(CONFIG_FILE);
        long configSize = Files.size(configFile);
        if (configSize > Safetensors.MAX_HEADER_BYTES) {
            throw new AdapterFormatException(CONFIG_FILE + ": expected at most " + Safetensors.MAX_HEADER_BYTES
                    + " bytes, got " + configSize);
        }
        byte[] configJson = Files.readAllBytes(configFile);
        try (SeekableByteChannel ch = Files.newByteChannel(dir.resolve(MODEL_FILE), StandardOpenOption.READ)) {
            return read(configJson, ch);
        }
    }

    /** Parses a config and a safetensors stream; package-private so the fuzz test runs without files. */
    static PeftAdapter read(byte[] configJson, SeekableByteChannel model) throws IOException {
        PeftAdapterConfig config = PeftAdapterConfig.parse(configJson, CONFIG_FILE);
        Safetensors.Contents contents = Safetensors.read(model, MODEL_FILE);
        Map<String, INDArray> as = new TreeMap<>();
        Map<String, INDArray> bs = new TreeMap<>();
        for (Map.Entry<String, Safetensors.Tensor> t : contents.tensors.entrySet()) {
            String key = t.getKey();
            boolean isA = key.endsWith(A_SUFFIX);
            boolean isB = key.endsWith(B_SUFFIX);
            int moduleEnd = key.length() - A_SUFFIX.length(); // both suffixes have the same length
            if (!key.startsWith(PREFIX) || !(isA || isB) || moduleEnd <= PREFIX.length()) {
                throw new AdapterFormatException(MODEL_FILE + ": unsupported tensor '" + key + "'; expected only "
                        + PREFIX + "<module>" + A_SUFFIX + " and " + PREFIX + "<module>" + B_SUFFIX);
            }
            String module = key.substring(PREFIX.length(), moduleEnd);
            long[] shape = t.getValue().shape;
            String what = MODEL_FILE + ": tensor '" + key + "'";
            if (shape.length != 2 || shape[0] < 1 || shape[1] < 1) {
                throw new AdapterFormatException(what + ": expected a non-empty matrix " + (isA ? "[r, in]"
                        : "[out, r]") + ", got shape " + Arrays.toString(shape));
            }
            long rank = isA ? shape[0] : shape[1];
            if (rank != config.r()) {
                throw new AdapterFormatException(what + ": expected rank r = " + config.r() + " from " + CONFIG_FILE
                        + " (shape " + (isA ? "[" + config.r() + ", in]" : "[out, " + config.r() + "]") + "), got shape "
                        + Arrays.toString(shape));
            }
            (isA ? as : bs).put(module, t.getValue().data);
        }
        if (as.isEmpty() && bs.isEmpty()) {
            throw new AdapterFormatException(MODEL_FILE + ": expected at least one module's " + PREFIX + "<module>"
                    + A_SUFFIX + " and " + B_SUFFIX + ", found no tensors");
        }
        for (String module : new TreeSet<>(as.keySet())) {
            if (!bs.containsKey(module)) {
                throw new AdapterFormatException(MODEL_FILE + ": module '" + module + "' has " + PREFIX + module
                        + A_SUFFIX + " but expected also " + PREFIX + module + B_SUFFIX + ", which is missing");
            }
        }
        for (String module : bs.keySet()) {
            if (!as.containsKey(module)) {
                throw new AdapterFormatException(MODEL_FILE + ": module '" + module + "' has " + PREFIX + module
                        + B_SUFFIX + " but expected also " + PREFIX + module + A_SUFFIX + ", which is missing");
            }
        }
        return new PeftAdapter(config, as, bs, contents.metadata);
    }

    // ---------------------------------------------------------------- load

    /**
     * Adds the adapter in {@code dir}, named {@code adapterName}, to every module the file names, with the file's
     * rank, alpha, dropout and rsLoRA (init {@code ZERO}, then the file's weights). The active adapter of each
     * layer does not change. Values are converted to each layer's data type (exact widening; F64 into a FLOAT
     * layer rounds to nearest). Modules in {@code modules} that the file does not name are left alone.
     *
     * <p>All or nothing: the file and every module are checked first; if adding still fails on some module (e.g.
     * another thread took the name meanwhile), the adapter is removed again from the modules it was added to.
     *
     * @return the file's config
     * @throws AdapterFormatException   if the file is corrupt, hostile or unsupported, or holds NaN or infinity
     * @throws IllegalArgumentException if the file does not fit the model: a module missing from {@code modules},
     *                                  a shape that does not match the layer's {@code in}/{@code out}, a rank above
     *                                  {@code min(in, out)}, a value overflowing the layer's type, or an adapter
     *                                  name that is invalid or already taken; the message names module, expected
     *                                  and actual
     */
    public static PeftAdapterConfig load(Path dir, Map<String, LoraLinear> modules, String adapterName)
            throws IOException {
        Objects.requireNonNull(modules, "modules must not be null");
        Objects.requireNonNull(adapterName, "adapterName must not be null");
        if (adapterName.isBlank() || adapterName.equals(LoraLinear.BASE_MODEL)) {
            throw new IllegalArgumentException("adapter name must be non-blank and not '" + LoraLinear.BASE_MODEL
                    + "', got '" + adapterName + "'");
        }
        PeftAdapter adapter = read(dir);
        PeftAdapterConfig config = adapter.config();
        LoraConfig loraConfig;
        try {
            loraConfig = config.toLoraConfig();
        } catch (IllegalArgumentException e) {
            throw new AdapterFormatException(CONFIG_FILE + ": " + e.getMessage(), e);
        }

        // Phase 1: check everything and prepare the arrays in each layer's type; nothing is changed yet.
        Map<String, INDArray[]> prepared = new LinkedHashMap<>();
        for (String module : adapter.modules()) {
            LoraLinear layer = modules.get(module);
            if (layer == null) {
                throw new IllegalArgumentException("module '" + module + "' of the adapter file is not in the model; "
                        + "expected one of " + new TreeSet<>(modules.keySet()));
            }
            INDArray a = adapter.storedA(module);
            INDArray b = adapter.storedB(module);
            long in = a.size(1);
            long out = b.size(0);
            if (in != layer.inFeatures() || out != layer.outFeatures()) {
                throw new IllegalArgumentException("module '" + module + "': the layer has in = "
                        + layer.inFeatures() + ", out = " + layer.outFeatures() + ", so expected A [" + config.r()
                        + ", " + layer.inFeatures() + "] and B [" + layer.outFeatures() + ", " + config.r()
                        + "], got A " + Arrays.toString(a.shape()) + " and B " + Arrays.toString(b.shape()));
            }
            if (config.r() > Math.min(in, out)) {
                throw new IllegalArgumentException("module '" + module + "': expected r <= min(in, out) = "
                        + Math.min(in, out) + ", got r = " + config.r());
            }
            if (layer.adapterNames().contains(adapterName)) {
                throw new IllegalArgumentException("module '" + module + "': expected adapter name '" + adapterName
                        + "' to be free, but the layer already has adapters " + layer.adapterNames());
            }
            prepared.put(module, new INDArray[] {
                convert(a, layer.dataType(), module, "lora_A"), convert(b, layer.dataType(), module, "lora_B")});
        }

        // Phase 2: apply; undo on the first failure so that no module keeps a half-loaded adapter.
        List<LoraLinear> added = new ArrayList<>();
        try {
            for (Map.Entry<String, INDArray[]> p : prepared.entrySet()) {
                LoraLinear layer = modules.get(p.getKey());
                layer.addAdapter(adapterName, loraConfig);
                added.add(layer);
                layer.setAdapterWeights(adapterName, p.getValue()[0], p.getValue()[1]);
            }
        } catch (RuntimeException e) {
            for (LoraLinear layer : added) {
                try {
                    layer.deleteAdapter(adapterName);
                } catch (RuntimeException suppressed) {
                    e.addSuppressed(suppressed);
                }
            }
            throw e;
        }
        return config;
    }

    private static INDArray convert(INDArray x, DataType type, String module, String tensor)
            throws AdapterFormatException {
        if (x.isNaN().any() || x.isInfinite().any()) {
            throw new AdapterFormatException(MODEL_FILE + ": module '" + module + "' " + tensor
                    + ": expected finite values, found NaN or infinity");
        }
        INDArray y = x.dataType() == type ? x.dup('c') : x.castTo(type).dup('c');
        if (y.isInfinite().any()) {
            throw new IllegalArgumentException("module '" + module + "' " + tensor + ": a value overflows the layer's "
                    + type + "; expected magnitudes below its largest finite value");
        }
        return y;
    }
}
