package io.github.lora4j.io;

import io.github.lora4j.LoraAdapter;
import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraConv2d;
import io.github.lora4j.LoraEmbedding;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.WeightLayout;
import io.github.lora4j.io.PeftAdapterLayout.Kind;
import io.github.lora4j.io.PeftAdapterLayout.LoraModule;
import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.channels.SeekableByteChannel;
import java.nio.file.DirectoryStream;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.BasicFileAttributes;
import java.nio.file.attribute.PosixFileAttributeView;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Properties;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.locks.ReentrantLock;
import java.util.function.Consumer;
import java.util.regex.Pattern;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * Saves, reads and loads LoRA adapters as PEFT does: a directory with {@code adapter_model.safetensors} and
 * {@code adapter_config.json}. Which tensor keys mean what is listed in {@link PeftAdapterLayout}.
 *
 * <pre>{@code
 * Map<String, LoraLinear> modules = Map.of("model.layers.0.self_attn.q_proj", q, "model.layers.0.self_attn.v_proj", v);
 * PeftAdapterFiles.save(dir, modules, "default");                 // F32, atomic
 * PeftAdapter all = PeftAdapterFiles.read(dir);                   // everything in the files, no model needed
 * PeftAdapterConfig cfg = PeftAdapterFiles.load(dir, modules, "sql"); // adds adapter "sql" to q and v
 * }</pre>
 *
 * <h2>What loads where</h2>
 * Linear LoRA (also GPT-2 {@code Conv1D} with {@code fan_in_fan_out}) loads into {@link LoraLinear}s, embedding
 * LoRA into {@link LoraEmbedding}s, each module with its own rank and alpha ({@code rank_pattern},
 * {@code alpha_pattern}). Conv2d LoRA loads into {@link LoraConv2d}s (inference and merging only); Conv1d/Conv3d LoRA
 * is read but refused by {@code load}. Full
 * tensors ({@code modules_to_save}, trained biases) are read; {@code io.github.lora4j.model.LoraModel} applies them,
 * the map-based {@code load} methods here refuse them (they cannot swap a caller's module).
 *
 * <h2>Hostile files</h2>
 * Both files must be regular files (a FIFO, a device, a directory, or a symbolic link to one is refused before
 * anything is opened); the config is read up to {@value PeftAdapterConfig#MAX_CONFIG_BYTES} bytes; the safetensors
 * header up to 32 MiB and {@value Safetensors#MAX_TENSORS} tensors. Keys, shapes and ranks are checked on the
 * parsed header before any tensor is decoded, and {@code load} checks them against the model then too, so a file
 * declaring a huge tensor that does not fit the model is refused without reading it. Between the regular-file check
 * and the open, a concurrent writer could swap a file for a FIFO; do not load from directories others write to.
 *
 * <h2>Failure guarantees</h2>
 * {@link #read} and {@link #load} check the whole file (sizes against the real file length before allocating)
 * before anything is built; {@link #load} also checks every module against the model before changing any.
 * {@link #save} validates everything (shapes, finite values, one rank per module) before writing, writes both files
 * to temporary files in the target directory, then renames each over its target ({@code ATOMIC_MOVE}) and
 * fsyncs the directory. If the second rename fails, the old model file is put back, so the pair stays consistent;
 * only a crash of the process between the two renames (one system call) can still pair new weights with the old
 * config. New files get the mode the umask gives (usually 0644); a replaced file keeps its mode. Temporary files
 * have fixed names ({@code .adapter_model.safetensors.lora4j-tmp}, ...), so a killed save leaves at most those, and
 * the next save reuses them. Saves to one directory are serialised within a JVM; do not save to one directory from
 * two processes at once.
 */
public final class PeftAdapterFiles {

    /** File name of the tensors. */
    public static final String MODEL_FILE = "adapter_model.safetensors";
    /** File name of the config. */
    public static final String CONFIG_FILE = "adapter_config.json";

    static final String PREFIX = PeftAdapterLayout.PREFIX;
    static final String A_SUFFIX = PeftAdapterLayout.A_SUFFIX;
    static final String B_SUFFIX = PeftAdapterLayout.B_SUFFIX;

    static final String TMP_SUFFIX = ".lora4j-tmp";
    static final String BACKUP_SUFFIX = ".lora4j-old";
    /** Temporary files of lora4j before 0.2 ({@code Files.createTempFile}), cleaned up by the next save. */
    private static final Pattern LEGACY_TMP = Pattern.compile("\\.adapter_(model\\.safetensors|config\\.json)\\.\\d+\\.tmp");

    private static final Map<Path, ReentrantLock> DIR_LOCKS = new ConcurrentHashMap<>();

    /** The renames of a save, replaceable in tests to make one fail. */
    interface FileOps {
        /** Renames {@code from} over {@code to} atomically. */
        void move(Path from, Path to) throws IOException;

        FileOps ATOMIC = (from, to) -> Files.move(from, to, StandardCopyOption.ATOMIC_MOVE,
                StandardCopyOption.REPLACE_EXISTING);
    }

    private PeftAdapterFiles() {
    }

    // ---------------------------------------------------------------- save

    /**
     * {@link #save(Path, Map, String, DataType)} with {@link DataType#FLOAT} (F32), PEFT's usual file type.
     *
     * @param dir         the target directory, created if absent; not {@code null}
     * @param modules     module path (e.g. {@code model.layers.0.self_attn.q_proj}) to layer; layers without the adapter
     *                    are skipped; neither the map nor the layers are modified
     * @param adapterName the adapter to write; not {@code null}
     * @throws IllegalArgumentException as {@link Saver#save}
     * @throws IOException              if writing fails; existing files are then left as they were
     */
    public static void save(Path dir, Map<String, LoraLinear> modules, String adapterName) throws IOException {
        save(dir, modules, adapterName, DataType.FLOAT);
    }

    /**
     * Writes adapter {@code adapterName} of every module that has it to {@code dir} (created if absent) as
     * {@value #MODEL_FILE} and {@value #CONFIG_FILE}; see {@link Saver#save}. {@code target_modules} lists the last
     * path component of each saved module.
     *
     * @param modules  module path (e.g. {@code model.layers.0.self_attn.q_proj}) to layer
     * @param fileType FLOAT (F32), DOUBLE (F64), HALF (F16) or BFLOAT16 (BF16); narrowing rounds to nearest even
     * @param dir         the target directory, created if absent; not {@code null}
     * @param adapterName the adapter to write; not {@code null}
     * @throws IllegalArgumentException as {@link Saver#save}
     * @throws IOException              if writing fails; existing files are then left as they were
     */
    public static void save(Path dir, Map<String, LoraLinear> modules, String adapterName, DataType fileType)
            throws IOException {
        saver().linears(modules).fileType(fileType).save(dir, adapterName);
    }

    /**
     * A saver for what the two-argument {@code save} methods cannot express: embeddings, modules_to_save, names.
     *
     * @return a new saver with no modules, F32 file type and no base model name
     */
    public static Saver saver() {
        return new Saver();
    }

    /**
     * Collects what one save writes. Arrays are read when {@link #save} runs, under each layer's lock.
     */
    public static final class Saver {
        private Map<String, LoraLinear> linears = Map.of();
        private Map<String, LoraEmbedding> embeddings = Map.of();
        private Map<String, LoraConv2d> convs = Map.of();
        private Map<String, Map<String, INDArray>> modulesToSave = Map.of();
        private String baseModel;
        private List<String> targets;
        private String targetRegex;
        private DataType fileType = DataType.FLOAT;
        private LoraConfig provenance;

        private Saver() {
        }

        /**
         * Linear modules, path to layer; those without the adapter are skipped.
         *
         * @param modules module path to layer; kept (not copied) and read when {@link #save} runs; not {@code null}
         * @return this saver
         * @throws NullPointerException if {@code modules} is {@code null}
         */
        public Saver linears(Map<String, LoraLinear> modules) {
            this.linears = Objects.requireNonNull(modules, "modules must not be null");
            return this;
        }

        /**
         * Embedding modules, path to layer; those without the adapter are skipped.
         *
         * @param modules module path to layer; kept (not copied) and read when {@link #save} runs; not {@code null}
         * @return this saver
         * @throws NullPointerException if {@code modules} is {@code null}
         */
        public Saver embeddings(Map<String, LoraEmbedding> modules) {
            this.embeddings = Objects.requireNonNull(modules, "modules must not be null");
            return this;
        }

        /**
         * Conv2d modules, path to layer; those without the adapter are skipped.
         *
         * @param modules module path to layer; kept (not copied) and read when {@link #save} runs; not {@code null}
         * @return this saver
         * @throws NullPointerException if {@code modules} is {@code null}
         */
        public Saver convs(Map<String, LoraConv2d> modules) {
            this.convs = Objects.requireNonNull(modules, "modules must not be null");
            return this;
        }

        /**
         * Full tensors written as PEFT's {@code modules_to_save}: module path to parameter ({@code weight},
         * {@code bias}) to tensor (in the module's own layout); keys {@code base_model.model.<m>.<param>}, and the
         * paths listed in the config's {@code modules_to_save}.
         *
         * @param tensors module path to parameter name to tensor; kept (not copied) and read when {@link #save} runs,
         *                never modified; not {@code null}
         * @return this saver
         * @throws NullPointerException if {@code tensors} is {@code null}
         */
        public Saver modulesToSave(Map<String, Map<String, INDArray>> tensors) {
            this.modulesToSave = Objects.requireNonNull(tensors, "tensors must not be null");
            return this;
        }

        /**
         * {@code base_model_name_or_path} (e.g. {@code "gpt2"}), or null (the default) to write null.
         *
         * @param nameOrPath the base model's name or path, or {@code null}
         * @return this saver
         */
        public Saver baseModelNameOrPath(String nameOrPath) {
            this.baseModel = nameOrPath;
            return this;
        }

        /**
         * {@code target_modules} as a list (PEFT matches a path equal to a name or ending in {@code "." + name}).
         *
         * @param names module-name suffixes, in the order to write them; copied; replaces any regex set before
         * @return this saver
         * @throws NullPointerException if {@code names} or one of its elements is {@code null}
         */
        public Saver targetModules(List<String> names) {
            this.targets = List.copyOf(names);
            this.targetRegex = null;
            return this;
        }

        /**
         * {@code target_modules} as one string, PEFT's regex form ({@code re.fullmatch} on the path).
         *
         * @param regex the regular expression, written as is; replaces any list set before; not {@code null}
         * @return this saver
         * @throws NullPointerException if {@code regex} is {@code null}
         */
        public Saver targetModulesRegex(String regex) {
            this.targetRegex = Objects.requireNonNull(regex, "regex must not be null");
            this.targets = null;
            return this;
        }

        /**
         * FLOAT (F32, the default), DOUBLE (F64), HALF (F16) or BFLOAT16 (BF16); narrowing rounds to nearest even.
         *
         * @param type the file's tensor type; an unsupported type is refused by {@link #save}; not {@code null}
         * @return this saver
         * @throws NullPointerException if {@code type} is {@code null}
         */
        public Saver fileType(DataType type) {
            this.fileType = Objects.requireNonNull(type, "fileType must not be null");
            return this;
        }

        /**
         * The configuration the adapter was created with, for the provenance in the metadata ({@code lora4j.init},
         * {@code lora4j.seed}); by default the first saved module's adapter config.
         *
         * @param config the configuration whose init scheme and seed are recorded, or {@code null} for the default
         * @return this saver
         */
        public Saver provenance(LoraConfig config) {
            this.provenance = config;
            return this;
        }

        /**
         * Writes adapter {@code adapterName} to {@code dir} (created if absent), replacing existing files atomically
         * (see the class comment). Modules may differ in rank and alpha ({@code r} and {@code lora_alpha} are the
         * most common values, the others go to {@code rank_pattern} / {@code alpha_pattern} under the full module
         * path). The safetensors metadata holds {@code format: pt} and lora4j's provenance: {@code lora4j.version},
         * {@code lora4j.init}, {@code lora4j.seed}, {@code lora4j.layout} ({@code OUT_IN} or {@code IN_OUT}).
         *
         * @param dir         the target directory, created if absent; not {@code null}
         * @param adapterName the adapter to write; not {@code null}
         * @throws IllegalArgumentException if no module has the adapter; modules differ in dropout, rsLoRA or weight
         *                                  layout (PEFT has one value of each); a module path is blank or appears
         *                                  twice; A, B or a full tensor holds NaN or infinity (naming the module) or
         *                                  a value overflowing the file type; nothing is written then
         * @throws IOException              if writing fails; existing files are then left as they were
         * @throws NullPointerException     if {@code dir} or {@code adapterName} is {@code null}
         */
        public void save(Path dir, String adapterName) throws IOException {
            save(dir, adapterName, FileOps.ATOMIC);
        }

        void save(Path dir, String adapterName, FileOps ops) throws IOException {
            Objects.requireNonNull(dir, "dir must not be null");
            Objects.requireNonNull(adapterName, "adapterName must not be null");
            Safetensors.Dtype dtype = Safetensors.Dtype.of(fileType);
            Prepared p = prepare(adapterName);
            writeFiles(dir, p.config.toJson(), p.tensors, p.metadata, dtype, ops);
        }

        private record Prepared(PeftAdapterConfig config, Map<String, INDArray> tensors, Map<String, String> metadata) {
        }

        private Prepared prepare(String adapterName) {
            Map<String, INDArray> tensors = new TreeMap<>();
            TreeSet<String> lastNames = new TreeSet<>();
            Map<String, LoraConfig> configs = new TreeMap<>();
            WeightLayout layout = null;
            String layoutModule = null;
            for (Map.Entry<String, LoraLinear> m : new TreeMap<>(linears).entrySet()) {
                String module = checkPath(m.getKey(), configs);
                LoraLinear layer = Objects.requireNonNull(m.getValue(), "layer of module '" + module + "'");
                if (!layer.adapterNames().contains(adapterName)) {
                    continue;
                }
                if (layout == null) {
                    layout = layer.layout();
                    layoutModule = module;
                } else if (layer.layout() != layout) {
                    throw new IllegalArgumentException("module '" + module + "' has weight layout " + layer.layout()
                            + ", but module '" + layoutModule + "' has " + layout
                            + "; a PEFT file holds one fan_in_fan_out for all modules");
                }
                LoraAdapter adapter = layer.adapter(adapterName);
                putPair(tensors, module, A_SUFFIX, B_SUFFIX, adapter);
                configs.put(module, effectiveConfig(module, adapter));
                lastNames.add(module.substring(module.lastIndexOf('.') + 1));
            }
            for (Map.Entry<String, LoraEmbedding> m : new TreeMap<>(embeddings).entrySet()) {
                String module = checkPath(m.getKey(), configs);
                LoraEmbedding layer = Objects.requireNonNull(m.getValue(), "layer of module '" + module + "'");
                if (!layer.adapterNames().contains(adapterName)) {
                    continue;
                }
                LoraAdapter adapter = layer.adapter(adapterName);
                putPair(tensors, module, PeftAdapterLayout.EMB_A_SUFFIX, PeftAdapterLayout.EMB_B_SUFFIX, adapter);
                configs.put(module, effectiveConfig(module, adapter));
                lastNames.add(module.substring(module.lastIndexOf('.') + 1));
            }
            for (Map.Entry<String, LoraConv2d> m : new TreeMap<>(convs).entrySet()) {
                String module = checkPath(m.getKey(), configs);
                LoraConv2d layer = Objects.requireNonNull(m.getValue(), "layer of module '" + module + "'");
                if (!layer.adapterNames().contains(adapterName)) {
                    continue;
                }
                INDArray a = layer.loraA(adapterName);
                INDArray b = layer.loraB(adapterName);
                requireFinite(a, "module '" + module + "' lora_A");
                requireFinite(b, "module '" + module + "' lora_B");
                tensors.put(PREFIX + module + A_SUFFIX, a);
                tensors.put(PREFIX + module + B_SUFFIX, b);
                configs.put(module, effectiveConfig(module, layer.adapter(adapterName)));
                lastNames.add(module.substring(module.lastIndexOf('.') + 1));
            }
            if (configs.isEmpty()) {
                throw new IllegalArgumentException("no module has adapter '" + adapterName + "'; expected at least one of "
                        + (linears.size() + embeddings.size() + convs.size()) + " modules to have it");
            }
            for (Map.Entry<String, Map<String, INDArray>> m : new TreeMap<>(modulesToSave).entrySet()) {
                String module = m.getKey();
                if (module == null || module.isBlank() || configs.containsKey(module)) {
                    throw new IllegalArgumentException("modules_to_save module '" + module + "' must be a non-blank "
                            + "path without LoRA tensors; LoRA modules: " + configs.keySet());
                }
                for (Map.Entry<String, INDArray> t : m.getValue().entrySet()) {
                    if (!t.getKey().equals("weight") && !t.getKey().equals("bias")) {
                        throw new IllegalArgumentException("modules_to_save module '" + module + "': expected "
                                + "parameters 'weight' and 'bias', got '" + t.getKey() + "'");
                    }
                    INDArray v = Objects.requireNonNull(t.getValue(), module + "." + t.getKey());
                    requireFinite(v, "modules_to_save module '" + module + "' " + t.getKey());
                    tensors.put(PREFIX + module + "." + t.getKey(), v.dup('c'));
                }
            }

            Map.Entry<String, LoraConfig> first = configs.entrySet().iterator().next();
            Map<Integer, Integer> rankCount = new TreeMap<>();
            Map<Double, Integer> alphaCount = new TreeMap<>();
            for (Map.Entry<String, LoraConfig> c : configs.entrySet()) {
                LoraConfig f = first.getValue();
                if (Double.compare(c.getValue().dropout(), f.dropout()) != 0 || c.getValue().rsLora() != f.rsLora()) {
                    throw new IllegalArgumentException("adapter '" + adapterName + "' of module '" + c.getKey()
                            + "' has dropout=" + c.getValue().dropout() + ", rsLora=" + c.getValue().rsLora()
                            + ", but module '" + first.getKey() + "' has dropout=" + f.dropout() + ", rsLora="
                            + f.rsLora() + "; a PEFT file holds one lora_dropout and use_rslora for all modules");
                }
                rankCount.merge(c.getValue().rank(), 1, Integer::sum);
                alphaCount.merge(c.getValue().alpha(), 1, Integer::sum);
            }
            int r = mostCommon(rankCount);
            double alpha = mostCommon(alphaCount);
            Map<String, Integer> rankPattern = new LinkedHashMap<>();
            Map<String, Double> alphaPattern = new LinkedHashMap<>();
            configs.forEach((module, c) -> {
                if (c.rank() != r) {
                    rankPattern.put(module, c.rank());
                }
                if (Double.compare(c.alpha(), alpha) != 0) {
                    alphaPattern.put(module, c.alpha());
                }
            });
            List<String> targetList = targetRegex != null ? List.of() : targets != null ? targets
                    : new ArrayList<>(lastNames);
            List<String> saveList = modulesToSave.isEmpty() ? null : new ArrayList<>(new TreeSet<>(modulesToSave.keySet()));
            LoraConfig f = first.getValue();
            PeftAdapterConfig config = new PeftAdapterConfig(r, alpha, f.dropout(), targetList, targetRegex, f.rsLora(),
                    layout == WeightLayout.IN_OUT, "none", rankPattern, alphaPattern, saveList, baseModel, null);
            // The patterns must give each module back its own rank and alpha when PEFT (or read) resolves them.
            configs.forEach((module, c) -> {
                if (config.rankOf(module) != c.rank() || Double.compare(config.alphaOf(module), c.alpha()) != 0) {
                    throw new IllegalArgumentException("module '" + module + "' (r=" + c.rank() + ", alpha=" + c.alpha()
                            + ") would read back as r=" + config.rankOf(module) + ", alpha=" + config.alphaOf(module)
                            + " through rank_pattern/alpha_pattern; rename modules whose paths match each other");
                }
            });
            LoraConfig origin = provenance != null ? provenance : f;
            Map<String, String> metadata = new LinkedHashMap<>();
            metadata.put("format", "pt");
            metadata.put("lora4j.version", version());
            metadata.put("lora4j.init", origin.init().name());
            metadata.put("lora4j.seed", Long.toString(origin.seed()));
            metadata.put("lora4j.layout", (layout == null ? WeightLayout.OUT_IN : layout).name());
            return new Prepared(config, tensors, metadata);
        }

        private static String checkPath(String module, Map<String, LoraConfig> seen) {
            if (module == null || module.isBlank()) {
                throw new IllegalArgumentException("module paths must not be blank, got '" + module + "'");
            }
            if (seen.containsKey(module)) {
                throw new IllegalArgumentException("module '" + module + "' appears in more than one of the linear, "
                        + "embedding and conv maps");
            }
            return module;
        }

        private static void putPair(Map<String, INDArray> tensors, String module, String aSuffix, String bSuffix,
                                    LoraAdapter adapter) {
            // Copies: the live arrays may be updated by an optimizer after this call returns.
            INDArray a = adapter.a().dup('c');
            INDArray b = adapter.b().dup('c');
            requireFinite(a, "module '" + module + "' lora_A");
            requireFinite(b, "module '" + module + "' lora_B");
            tensors.put(PREFIX + module + aSuffix, a);
            tensors.put(PREFIX + module + bSuffix, b);
        }

        private static <K> K mostCommon(Map<K, Integer> counts) {
            return counts.entrySet().stream().max(Comparator.comparingInt(Map.Entry::getValue)).orElseThrow().getKey();
        }
    }

    private static void requireFinite(INDArray x, String what) {
        if (x.isNaN().any() || x.isInfinite().any()) {
            throw new IllegalArgumentException(what + ": expected finite values, found NaN or infinity; nothing was "
                    + "written (a file with them would not load)");
        }
    }

    /** lora4j's version from the jar's Maven metadata, or {@code "dev"} when run from classes. */
    static String version() {
        try (InputStream in = PeftAdapterFiles.class.getResourceAsStream(
                "/META-INF/maven/io.github.lora4j/lora-core/pom.properties")) {
            if (in != null) {
                Properties p = new Properties();
                p.load(in);
                return p.getProperty("version", "dev");
            }
        } catch (IOException e) {
            // fall through: provenance is best effort
        }
        return "dev";
    }

    private static void writeFiles(Path dir, byte[] configJson, Map<String, INDArray> tensors,
                                   Map<String, String> metadata, Safetensors.Dtype dtype, FileOps ops)
            throws IOException {
        Files.createDirectories(dir);
        ReentrantLock lock = DIR_LOCKS.computeIfAbsent(dir.toAbsolutePath().normalize(), d -> new ReentrantLock());
        lock.lock();
        try {
            Path modelTarget = dir.resolve(MODEL_FILE);
            Path configTarget = dir.resolve(CONFIG_FILE);
            for (Path target : List.of(modelTarget, configTarget)) {
                if (Files.exists(target) && !Files.isRegularFile(target)) {
                    throw new IOException("cannot replace " + target + ": expected a regular file or nothing, found "
                            + "a directory or special file");
                }
            }
            cleanStaleTemporaries(dir);
            Path modelTmp = dir.resolve("." + MODEL_FILE + TMP_SUFFIX);
            Path configTmp = dir.resolve("." + CONFIG_FILE + TMP_SUFFIX);
            Path backup = dir.resolve("." + MODEL_FILE + BACKUP_SUFFIX);
            try {
                try (FileChannel ch = createFresh(modelTmp)) {
                    Safetensors.write(ch, tensors, metadata, dtype);
                    ch.force(true);
                }
                try (FileChannel ch = createFresh(configTmp)) {
                    ByteBuffer b = ByteBuffer.wrap(configJson);
                    while (b.hasRemaining()) {
                        ch.write(b);
                    }
                    ch.force(true);
                }
                keepMode(modelTarget, modelTmp);
                keepMode(configTarget, configTmp);
                boolean hadModel = Files.exists(modelTarget, LinkOption.NOFOLLOW_LINKS);
                if (hadModel) {
                    try {
                        Files.createLink(backup, modelTarget);
                    } catch (UnsupportedOperationException | IOException noHardLinks) {
                        Files.copy(modelTarget, backup, StandardCopyOption.COPY_ATTRIBUTES,
                                StandardCopyOption.REPLACE_EXISTING);
                    }
                }
                // ATOMIC_MOVE is a rename(2) on POSIX: readers see the old file or the new one, never a mix.
                ops.move(modelTmp, modelTarget);
                try {
                    ops.move(configTmp, configTarget);
                } catch (IOException | RuntimeException e) {
                    try {
                        if (hadModel) {
                            ops.move(backup, modelTarget);
                        } else {
                            Files.delete(modelTarget);
                        }
                    } catch (IOException | RuntimeException restore) {
                        e.addSuppressed(restore);
                        throw new IOException("replacing " + configTarget + " failed and the old " + MODEL_FILE
                                + " could not be put back: " + dir + " now holds the new weights beside the old "
                                + "config; save again", e);
                    }
                    throw e;
                }
                syncDirectory(dir);
            } finally {
                Files.deleteIfExists(modelTmp);
                Files.deleteIfExists(configTmp);
                Files.deleteIfExists(backup);
            }
        } finally {
            lock.unlock();
        }
    }

    /**
     * A new empty file at {@code path} with the mode the umask gives (as {@code open(2)} with 0666 does), replacing
     * what a killed save left there. {@code Files.createTempFile} would give 0600.
     */
    private static FileChannel createFresh(Path path) throws IOException {
        Files.deleteIfExists(path);
        try {
            return FileChannel.open(path, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE);
        } catch (FileAlreadyExistsException e) {
            throw new IOException("another save is writing " + path + "; expected one save per directory at a time", e);
        }
    }

    /** An existing target keeps its permissions: copy them to the file that replaces it. */
    private static void keepMode(Path target, Path replacement) throws IOException {
        if (!Files.exists(target)) {
            return;
        }
        PosixFileAttributeView from = Files.getFileAttributeView(target, PosixFileAttributeView.class);
        PosixFileAttributeView to = Files.getFileAttributeView(replacement, PosixFileAttributeView.class);
        if (from != null && to != null) {
            to.setPermissions(from.readAttributes().permissions());
        }
    }

    /** Removes temporary files of earlier, killed saves (this version's fixed names and older random ones). */
    private static void cleanStaleTemporaries(Path dir) throws IOException {
        try (DirectoryStream<Path> s = Files.newDirectoryStream(dir, ".adapter_*")) {
            for (Path p : s) {
                String name = p.getFileName().toString();
                if (name.endsWith(TMP_SUFFIX) || name.endsWith(BACKUP_SUFFIX) || LEGACY_TMP.matcher(name).matches()) {
                    Files.deleteIfExists(p);
                }
            }
        }
    }

    /** fsync the directory so the renames survive a power loss; not possible on every platform (e.g. Windows). */
    private static void syncDirectory(Path dir) {
        try (FileChannel ch = FileChannel.open(dir, StandardOpenOption.READ)) {
            ch.force(true);
        } catch (IOException | UnsupportedOperationException e) {
            // The files themselves were forced; a directory that cannot be opened cannot be synced either.
        }
    }

    // ---------------------------------------------------------------- read

    /**
     * Reads and validates the adapter in {@code dir} without touching any model: everything the files hold.
     *
     * @param dir the directory holding {@value #CONFIG_FILE} and {@value #MODEL_FILE}; not {@code null}
     * @return the adapter with every tensor decoded; nothing refers to the files afterwards
     * @throws AdapterFormatException if either file is corrupt, hostile or unsupported, or not a regular file
     * @throws NoSuchFileException    if a file is missing
     * @throws IOException            if reading fails otherwise
     */
    public static PeftAdapter read(Path dir) throws IOException {
        return read(dir, layout -> { });
    }

    /**
     * {@link #read(Path)}, calling {@code check} with the layout parsed from the header before any tensor is
     * decoded: a check that throws (e.g. because a shape does not fit a model) stops the read at no cost.
     *
     * @param check called once; its unchecked exception is rethrown as is
     * @param dir   the directory holding {@value #CONFIG_FILE} and {@value #MODEL_FILE}; not {@code null}
     * @return the adapter with every tensor decoded; nothing refers to the files afterwards
     * @throws AdapterFormatException if either file is corrupt, hostile or unsupported, or not a regular file
     * @throws NoSuchFileException    if a file is missing
     * @throws IOException            if reading fails otherwise
     * @throws NullPointerException   if {@code dir} or {@code check} is {@code null}
     */
    public static PeftAdapter read(Path dir, Consumer<? super PeftAdapterLayout> check) throws IOException {
        Objects.requireNonNull(dir, "dir must not be null");
        Objects.requireNonNull(check, "check must not be null");
        Path configFile = dir.resolve(CONFIG_FILE);
        Path modelFile = dir.resolve(MODEL_FILE);
        requireRegularFile(configFile, PeftAdapterConfig.MAX_CONFIG_BYTES);
        requireRegularFile(modelFile, Long.MAX_VALUE);
        byte[] configJson = readBounded(configFile, PeftAdapterConfig.MAX_CONFIG_BYTES);
        try (SeekableByteChannel ch = Files.newByteChannel(modelFile, StandardOpenOption.READ)) {
            return read(configJson, ch, check);
        }
    }

    /** Refuses anything but a regular file, without opening it (opening a FIFO for reading blocks). */
    private static void requireRegularFile(Path file, long maxSize) throws IOException {
        BasicFileAttributes own = Files.readAttributes(file, BasicFileAttributes.class, LinkOption.NOFOLLOW_LINKS);
        BasicFileAttributes target = own.isSymbolicLink() ? Files.readAttributes(file, BasicFileAttributes.class) : own;
        if (!target.isRegularFile()) {
            String kind = target.isDirectory() ? "a directory" : "a special file (FIFO, socket or device)";
            throw new AdapterFormatException(file.getFileName() + ": expected a regular file, got " + kind
                    + (own.isSymbolicLink() ? " behind the symbolic link " + file : ""));
        }
        if (target.size() > maxSize) {
            throw new AdapterFormatException(file.getFileName() + ": expected at most " + maxSize + " bytes, got "
                    + target.size());
        }
    }

    /** The whole file, refusing it once more than {@code max} bytes were read (the file may grow meanwhile). */
    private static byte[] readBounded(Path file, long max) throws IOException {
        try (SeekableByteChannel ch = Files.newByteChannel(file, StandardOpenOption.READ)) {
            ByteBuffer buf = ByteBuffer.allocate((int) Math.min(max + 1, Math.max(ch.size() + 1, 1)));
            while (true) {
                int n = ch.read(buf);
                if (n < 0) {
                    break;
                }
                if (!buf.hasRemaining()) {
                    if (buf.capacity() > max) {
                        throw new AdapterFormatException(file.getFileName() + ": expected at most " + max
                                + " bytes, the file holds more");
                    }
                    buf = ByteBuffer.allocate((int) Math.min(max + 1, 2L * buf.capacity())).put(buf.flip());
                }
            }
            return Arrays.copyOf(buf.array(), buf.position());
        }
    }

    /** Parses a config and a safetensors stream; package-private so the fuzz test runs without files. */
    static PeftAdapter read(byte[] configJson, SeekableByteChannel model) throws IOException {
        return read(configJson, model, layout -> { });
    }

    static PeftAdapter read(byte[] configJson, SeekableByteChannel model, Consumer<? super PeftAdapterLayout> check)
            throws IOException {
        PeftAdapterConfig config = PeftAdapterConfig.parse(configJson, CONFIG_FILE);
        Safetensors.Header header = Safetensors.readHeader(model, MODEL_FILE);
        PeftAdapterLayout layout = PeftAdapterLayout.of(config, header, MODEL_FILE);
        check.accept(layout);
        Map<String, INDArray> as = new TreeMap<>();
        Map<String, INDArray> bs = new TreeMap<>();
        Map<String, Map<String, INDArray>> full = new TreeMap<>();
        Map<String, INDArray> baseCopies = new TreeMap<>();
        for (Map.Entry<String, String[]> k : layout.roles.entrySet()) {
            INDArray data = Safetensors.decode(model, header, header.entries.get(k.getKey()), MODEL_FILE);
            String[] role = k.getValue();
            switch (role[1]) {
                case "A":
                case "embA":
                    as.put(role[0], data);
                    break;
                case "B":
                case "embB":
                    bs.put(role[0], data);
                    break;
                case "base":
                    baseCopies.put(k.getKey().substring(PREFIX.length()), data);
                    break;
                default:
                    full.computeIfAbsent(role[0], m -> new TreeMap<>()).put(role[2], data);
            }
        }
        return new PeftAdapter(layout, as, bs, full, baseCopies);
    }

    // ---------------------------------------------------------------- load

    /**
     * Adds the adapter in {@code dir}, named {@code adapterName}, to every linear module the file names; see
     * {@link #load(Path, Map, Map, String)}.
     *
     * @param dir         the directory holding {@value #CONFIG_FILE} and {@value #MODEL_FILE}; not {@code null}
     * @param modules     module path to layer; the layers the file names get the adapter, the map is not modified
     * @param adapterName the name to add the adapter under; non-blank, not {@value LoraLinear#BASE_MODEL}, not taken
     * @return the file's config
     * @throws AdapterFormatException   as {@link #load(Path, Map, Map, String)}
     * @throws IllegalArgumentException as {@link #load(Path, Map, Map, String)}; also if the file holds embedding LoRA
     * @throws IOException              if reading fails otherwise
     */
    public static PeftAdapterConfig load(Path dir, Map<String, LoraLinear> modules, String adapterName)
            throws IOException {
        return load(dir, modules, Map.of(), adapterName);
    }

    /**
     * Adds the adapter in {@code dir}, named {@code adapterName}, to every module the file names, each with its own
     * rank and alpha ({@code rank_pattern} / {@code alpha_pattern}) and the file's dropout and rsLoRA (init
     * {@code ZERO}, then the file's weights). The active adapter of each layer does not change. Values are converted
     * to each layer's data type (exact widening; F64 into a FLOAT layer rounds to nearest). Modules in the maps that
     * the file does not name are left alone.
     *
     * <p>All or nothing: the file's header is checked against the model before any tensor is read, then the values;
     * if adding still fails on some module (e.g. another thread took the name meanwhile), the adapter is removed
     * again from the modules it was added to.
     *
     * @param dir         the directory holding {@value #CONFIG_FILE} and {@value #MODEL_FILE}; not {@code null}
     * @param linears     linear module path to layer; the layers the file names get the adapter, the map is not
     *                    modified
     * @param embeddings  embedding module path to layer; likewise
     * @param adapterName the name to add the adapter under; non-blank, not {@value LoraLinear#BASE_MODEL}, not taken
     * @return the file's config
     * @throws AdapterFormatException   if the file is corrupt, hostile or unsupported, or holds NaN or infinity
     * @throws IllegalArgumentException if the file does not fit the model: a module missing or of another kind (conv
     *                                  LoRA always here: pass conv layers to the six-argument load), full tensors
     *                                  ({@code modules_to_save}: use {@code LoraModel}), a shape that does not match
     *                                  the layer, a rank above {@code min(in, out)}, a scaling or value that is not
     *                                  finite in the layer's type, or an adapter name that is invalid or taken; the
     *                                  message names module, expected and actual
     * @throws IOException              if reading fails otherwise; no layer was changed then
     * @throws NullPointerException     if an argument is {@code null}
     */
    public static PeftAdapterConfig load(Path dir, Map<String, LoraLinear> linears, Map<String, LoraEmbedding> embeddings,
                                         String adapterName) throws IOException {
        return load(dir, linears, embeddings, Map.of(), adapterName, null).config();
    }

    /**
     * {@link #load(Path, Map, Map, String)} with Conv2d modules too ({@link LoraConv2d}: A {@code [r, in, kh, kw]},
     * B {@code [out, r, 1, 1]}), for a caller that applies the file's full tensors itself (as {@code LoraModel}
     * does): {@code fullTensorCheck} sees the layout before any tensor is read and throws if the full tensors do not
     * fit; null refuses any. The returned adapter holds them.
     *
     * @param dir             the directory holding {@value #CONFIG_FILE} and {@value #MODEL_FILE}; not {@code null}
     * @param linears         linear module path to layer; the map is not modified; not {@code null}
     * @param embeddings      embedding module path to layer; the map is not modified; not {@code null}
     * @param convs           Conv2d module path to layer; the map is not modified; not {@code null}
     * @param adapterName     the name to add the adapter under; non-blank, not {@value LoraLinear#BASE_MODEL}, not
     *                        taken
     * @param fullTensorCheck called once with the layout before any tensor is read, or {@code null} to refuse full
     *                        tensors
     * @return everything the file holds, full tensors included (copies; the layers hold their own arrays)
     * @throws AdapterFormatException   as {@link #load(Path, Map, Map, String)}
     * @throws IllegalArgumentException as {@link #load(Path, Map, Map, String)}, conv modules allowed here; or whatever
     *                                  unchecked exception {@code fullTensorCheck} throws
     * @throws IOException              if reading fails otherwise; no layer was changed then
     * @throws NullPointerException     if an argument but {@code fullTensorCheck} is {@code null}
     */
    public static PeftAdapter load(Path dir, Map<String, LoraLinear> linears, Map<String, LoraEmbedding> embeddings,
                                   Map<String, LoraConv2d> convs, String adapterName,
                                   Consumer<? super PeftAdapterLayout> fullTensorCheck) throws IOException {
        Objects.requireNonNull(linears, "linears must not be null");
        Objects.requireNonNull(embeddings, "embeddings must not be null");
        Objects.requireNonNull(convs, "convs must not be null");
        Objects.requireNonNull(adapterName, "adapterName must not be null");
        if (adapterName.isBlank() || adapterName.equals(LoraLinear.BASE_MODEL)) {
            throw new IllegalArgumentException("adapter name must be non-blank and not '" + LoraLinear.BASE_MODEL
                    + "', got '" + adapterName + "'");
        }
        Map<String, LoraConfig> configs = new HashMap<>();
        PeftAdapter adapter = read(dir, layout -> {
            configs.putAll(checkFits(layout, linears, embeddings, convs, adapterName));
            if (fullTensorCheck != null) {
                fullTensorCheck.accept(layout);
            } else if (!layout.fullTensors().isEmpty()) {
                throw new IllegalArgumentException("the file holds full tensors (modules_to_save or trained biases) for "
                        + layout.fullTensors().keySet() + ", which a map of layers cannot take; load it with "
                        + "LoraModel.load, or read it with PeftAdapterFiles.read");
            }
        });

        // Phase 1: convert every array to its layer's type; nothing is changed yet.
        Map<String, INDArray[]> prepared = new LinkedHashMap<>();
        for (String module : adapter.modules()) {
            DataType type = linears.containsKey(module) ? linears.get(module).dataType()
                    : embeddings.containsKey(module) ? embeddings.get(module).dataType() : convs.get(module).dataType();
            String owner = "module '" + module + "'";
            prepared.put(module, new INDArray[] {convert(adapter.storedA(module), type, owner, "lora_A"),
                convert(adapter.storedB(module), type, owner, "lora_B")});
        }

        // Phase 2: apply; undo on the first failure so that no module keeps a half-loaded adapter.
        List<Runnable> undo = new ArrayList<>();
        try {
            for (Map.Entry<String, INDArray[]> p : prepared.entrySet()) {
                String module = p.getKey();
                LoraConfig cfg = configs.get(module);
                LoraLinear linear = linears.get(module);
                if (linear != null) {
                    linear.addAdapter(adapterName, cfg);
                    undo.add(() -> linear.deleteAdapter(adapterName));
                    linear.setAdapterWeights(adapterName, p.getValue()[0], p.getValue()[1]);
                } else if (embeddings.containsKey(module)) {
                    LoraEmbedding emb = embeddings.get(module);
                    emb.addAdapter(adapterName, cfg);
                    undo.add(() -> emb.deleteAdapter(adapterName));
                    emb.setAdapterWeights(adapterName, p.getValue()[0], p.getValue()[1]);
                } else {
                    LoraConv2d conv = convs.get(module);
                    conv.addAdapter(adapterName, cfg);
                    undo.add(() -> conv.deleteAdapter(adapterName));
                    conv.setAdapterWeights(adapterName, p.getValue()[0], p.getValue()[1]);
                }
            }
        } catch (RuntimeException e) {
            for (Runnable u : undo) {
                try {
                    u.run();
                } catch (RuntimeException suppressed) {
                    e.addSuppressed(suppressed);
                }
            }
            throw e;
        }
        return adapter;
    }

    /** Checks every LoRA module of {@code layout} against the model; returns each module's lora4j config. */
    private static Map<String, LoraConfig> checkFits(PeftAdapterLayout layout, Map<String, LoraLinear> linears,
                                                     Map<String, LoraEmbedding> embeddings,
                                                     Map<String, LoraConv2d> convs, String adapterName) {
        PeftAdapterConfig config = layout.config();
        Map<String, LoraConfig> configs = new HashMap<>();
        for (Map.Entry<String, LoraModule> e : layout.loraModules().entrySet()) {
            String module = e.getKey();
            LoraModule m = e.getValue();
            String shapes = "A " + Arrays.toString(m.shapeA()) + " and B " + Arrays.toString(m.shapeB());
            long in;
            long out;
            DataType type;
            List<String> names;
            if (m.kind() == Kind.CONV) {
                LoraConv2d conv = convs.get(module);
                if (conv == null || m.shapeA().length != 4) {
                    throw new IllegalArgumentException("module '" + module + "' holds Conv LoRA (" + shapes + "); "
                            + (m.shapeA().length != 4 ? "lora4j has no Conv1d/Conv3d layer to load it into"
                            : "the model has no LoraConv2d at that path to load it into (LoraModel.Builder.conv2d)")
                            + "; read it with PeftAdapterFiles.read");
                }
                int[] k = conv.kernelSize();
                long[] a = {m.rank(), conv.inChannels(), k[0], k[1]};
                long[] b = {conv.outChannels(), m.rank(), 1, 1};
                if (!Arrays.equals(a, m.shapeA()) || !Arrays.equals(b, m.shapeB())) {
                    throw new IllegalArgumentException("module '" + module + "': the conv layer has in = "
                            + conv.inChannels() + ", out = " + conv.outChannels() + ", kernel " + k[0] + "x" + k[1]
                            + ", so expected A " + Arrays.toString(a) + " and B " + Arrays.toString(b) + ", got " + shapes);
                }
                in = conv.inChannels() * k[0] * k[1];
                out = conv.outChannels();
                type = conv.dataType();
                names = conv.adapterNames();
            } else if (m.kind() == Kind.LINEAR) {
                LoraLinear layer = linears.get(module);
                if (layer == null) {
                    throw notInModel(module, "linear", linears, embeddings);
                }
                in = layer.inFeatures();
                out = layer.outFeatures();
                type = layer.dataType();
                names = layer.adapterNames();
            } else {
                LoraEmbedding layer = embeddings.get(module);
                if (layer == null) {
                    throw notInModel(module, "embedding", linears, embeddings);
                }
                in = layer.numEmbeddings();
                out = layer.embeddingDim();
                type = layer.dataType();
                names = layer.adapterNames();
            }
            if (m.kind() != Kind.CONV && (m.in() != in || m.out() != out)) {
                String what = m.kind() == Kind.LINEAR ? "in = " + in + ", out = " + out
                        : "num_embeddings = " + in + ", dim = " + out;
                throw new IllegalArgumentException("module '" + module + "': the layer has " + what + ", so expected A ["
                        + m.rank() + ", " + in + "] and B [" + out + ", " + m.rank() + "], got " + shapes);
            }
            if (m.rank() > Math.min(in, out)) {
                throw new IllegalArgumentException("module '" + module + "': expected r <= min(in, out) = "
                        + Math.min(in, out) + ", got r = " + m.rank());
            }
            if (names.contains(adapterName)) {
                throw new IllegalArgumentException("module '" + module + "': expected adapter name '" + adapterName
                        + "' to be free, but the layer already has adapters " + names);
            }
            LoraConfig cfg;
            try {
                cfg = config.toLoraConfig(module);
            } catch (IllegalArgumentException ex) {
                throw new IllegalArgumentException(CONFIG_FILE + ": module '" + module + "': " + ex.getMessage(), ex);
            }
            double s = cfg.scaling();
            if (!Double.isFinite(s) || type == DataType.FLOAT && Float.isInfinite((float) s)) {
                throw new IllegalArgumentException("module '" + module + "': lora_alpha " + cfg.alpha() + " and r "
                        + cfg.rank() + " give the scaling " + s + ", which is not finite in the layer's " + type
                        + "; expected a scaling below " + (type == DataType.FLOAT ? Float.MAX_VALUE : Double.MAX_VALUE));
            }
            configs.put(module, cfg);
        }
        return configs;
    }

    /**
     * The config a file stores for {@code adapter}: its own, with {@code lora_alpha} the effective
     * {@code scale·alpha} after {@link LoraLinear#setAdapterScale}, so the file computes what the adapter does.
     */
    private static LoraConfig effectiveConfig(String module, LoraAdapter adapter) {
        if (adapter.scale() == 1.0) {
            return adapter.config();
        }
        if (!(adapter.effectiveAlpha() > 0)) {
            throw new IllegalArgumentException("module '" + module + "': adapter '" + adapter.name() + "' has scale "
                    + adapter.scale() + ", so its effective lora_alpha " + adapter.effectiveAlpha() + " is not positive;"
                    + " expected a positive scale to save it (PEFT's lora_alpha is positive)");
        }
        return adapter.config().toBuilder().alpha(adapter.effectiveAlpha()).build();
    }

    private static IllegalArgumentException notInModel(String module, String kind, Map<String, LoraLinear> linears,
                                                       Map<String, LoraEmbedding> embeddings) {
        String other = kind.equals("linear") ? (embeddings.containsKey(module) ? " (it is an embedding there)" : "")
                : (linears.containsKey(module) ? " (it is a linear module there)" : "");
        return new IllegalArgumentException("module '" + module + "' of the adapter file is not in the model as a "
                + kind + " module" + other + "; expected one of "
                + new TreeSet<>(kind.equals("linear") ? linears.keySet() : embeddings.keySet()));
    }

    /** {@code x} in {@code type}, c-order; {@code owner} names the module in messages. */
    static INDArray convert(INDArray x, DataType type, String owner, String tensor) throws AdapterFormatException {
        if (x.isNaN().any() || x.isInfinite().any()) {
            throw new AdapterFormatException(MODEL_FILE + ": " + owner + " " + tensor
                    + ": expected finite values, found NaN or infinity");
        }
        INDArray y = x.dataType() == type ? x.dup('c') : x.castTo(type).dup('c');
        if (y.isInfinite().any()) {
            throw new IllegalArgumentException(owner + " " + tensor + ": a value overflows the layer's "
                    + type + "; expected magnitudes below its largest finite value");
        }
        return y;
    }
}
