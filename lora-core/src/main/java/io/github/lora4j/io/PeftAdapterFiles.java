package io.github.lora4j.io;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraConv2d;
import io.github.lora4j.LoraEmbedding;
import io.github.lora4j.LoraLinear;
import java.io.IOException;
import java.nio.channels.SeekableByteChannel;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.Collection;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.TreeMap;
import java.util.function.Consumer;
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
 * config. New files get the mode the umask gives (usually 0644); a replaced file keeps its mode. Saves into one
 * directory run one at a time, within a JVM and across processes, also when the directory is reached through a
 * symbolic link or a bind mount: a second save waits for the first (an OS file lock on
 * {@value SafeFiles#LOCK_FILE}, which stays in the directory). Each save's temporary files have names of their own
 * ({@code .adapter_model.safetensors.<random>.lora4j-tmp}, ...); what a killed save leaves is removed by the next
 * save. The details are in {@link SafeFiles}, which {@code LoraTrainer.saveState} shares.
 */
public final class PeftAdapterFiles {

    /** File name of the tensors. */
    public static final String MODEL_FILE = "adapter_model.safetensors";
    /** File name of the config. */
    public static final String CONFIG_FILE = "adapter_config.json";

    static final String PREFIX = PeftAdapterLayout.PREFIX;
    static final String A_SUFFIX = PeftAdapterLayout.A_SUFFIX;
    static final String B_SUFFIX = PeftAdapterLayout.B_SUFFIX;

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
     * Collects what one save writes. The maps handed to it are copied when handed over, so changing them afterwards
     * does not change what is saved; the layers themselves are live objects, whose {@code A} and {@code B} are read
     * when {@link #save} runs, under each layer's lock. Full tensors ({@link #modulesToSave}) are copied when handed
     * over.
     */
    public static final class Saver {
        // Maps that answer containsKey(null) (Map.of() throws): SavePlan refuses a null path by name.
        Map<String, LoraLinear> linears = Collections.emptyMap();
        Map<String, LoraEmbedding> embeddings = Collections.emptyMap();
        Map<String, LoraConv2d> convs = Collections.emptyMap();
        Map<String, Map<String, INDArray>> modulesToSave = Collections.emptyMap();
        /** Adapter name to the bare adapters saved under it ({@link #adapterTensors}), private copies. */
        final Map<String, List<AdapterTensors>> tensors = new LinkedHashMap<>();
        String baseModel;
        String taskType;
        List<String> targets;
        String targetRegex;
        DataType fileType = DataType.FLOAT;
        LoraConfig provenance;

        private Saver() {
        }

        /**
         * Linear modules, path to layer; those without the adapter are skipped.
         *
         * @param modules module path to layer; the map is copied now, the layers are read when {@link #save} runs;
         *                not {@code null}
         * @return this saver
         * @throws NullPointerException if {@code modules} is {@code null}
         */
        public Saver linears(Map<String, LoraLinear> modules) {
            this.linears = snapshot(modules);
            return this;
        }

        /**
         * Embedding modules, path to layer; those without the adapter are skipped.
         *
         * @param modules module path to layer; the map is copied now, the layers are read when {@link #save} runs;
         *                not {@code null}
         * @return this saver
         * @throws NullPointerException if {@code modules} is {@code null}
         */
        public Saver embeddings(Map<String, LoraEmbedding> modules) {
            this.embeddings = snapshot(modules);
            return this;
        }

        /**
         * Conv2d modules, path to layer; those without the adapter are skipped.
         *
         * @param modules module path to layer; the map is copied now, the layers are read when {@link #save} runs;
         *                not {@code null}
         * @return this saver
         * @throws NullPointerException if {@code modules} is {@code null}
         */
        public Saver convs(Map<String, LoraConv2d> modules) {
            this.convs = snapshot(modules);
            return this;
        }

        /**
         * Full tensors written as PEFT's {@code modules_to_save}: module path to parameter ({@code weight},
         * {@code bias}) to tensor (in the module's own layout); keys {@code base_model.model.<m>.<param>}, and the
         * paths listed in the config's {@code modules_to_save}.
         *
         * @param tensors module path to parameter name to tensor; copied now, maps and arrays (c-order), so changing
         *                them afterwards does not change what is saved; never modified; not {@code null}
         * @return this saver
         * @throws NullPointerException if {@code tensors} or one of its per-module maps is {@code null}
         */
        public Saver modulesToSave(Map<String, Map<String, INDArray>> tensors) {
            Objects.requireNonNull(tensors, "tensors must not be null");
            Map<String, Map<String, INDArray>> copy = new LinkedHashMap<>();
            tensors.forEach((module, params) -> {
                Objects.requireNonNull(params, "modules_to_save module '" + module + "': parameter map must not be null");
                Map<String, INDArray> p = new LinkedHashMap<>();
                // A null tensor is kept as null: save refuses it, naming module and parameter, as before.
                params.forEach((name, x) -> p.put(name, x == null ? null : x.dup('c')));
                copy.put(module, Collections.unmodifiableMap(p));
            });
            this.modulesToSave = Collections.unmodifiableMap(copy);
            return this;
        }

        /**
         * Linear adapters given as bare tensors ({@code A}, {@code B}, DoRA's {@code m}, with their config and layout)
         * rather than as layers, saved as adapter {@code adapterName}: a host that keeps its adapter's arrays itself
         * (a DL4J network, a SameDiff graph) writes the same files as a {@link LoraLinear} holding them would, without
         * building one. They join the modules of {@link #linears} etc. when {@link #save} (or {@link #saveAll}) writes
         * {@code adapterName}; a second call for the same name replaces the first's list.
         *
         * @param adapterName the adapter these tensors are saved as; not {@code null}
         * @param adapters    one entry per module, each module once; each entry's arrays are copied now, so changing
         *                    them afterwards does not change what is saved; never modified; not {@code null}
         * @return this saver
         * @throws NullPointerException     if {@code adapterName}, {@code adapters} or an entry is {@code null}
         * @throws IllegalArgumentException if a module appears twice in {@code adapters}; the saver is then unchanged
         */
        public Saver adapterTensors(String adapterName, Collection<AdapterTensors> adapters) {
            Objects.requireNonNull(adapterName, "adapterName must not be null");
            Objects.requireNonNull(adapters, "adapters must not be null");
            Map<String, AdapterTensors> copies = new LinkedHashMap<>();
            for (AdapterTensors t : adapters) {
                Objects.requireNonNull(t, "adapter tensors for '" + adapterName + "' must not contain null");
                if (copies.put(t.module(), t.copy()) != null) {
                    throw new IllegalArgumentException("module '" + t.module() + "' appears twice in the adapter "
                            + "tensors of '" + adapterName + "'; expected each module once");
                }
            }
            tensors.put(adapterName, List.copyOf(copies.values()));
            return this;
        }

        /** An unmodifiable copy keeping the caller's order; null keys and layers are refused later, by save. */
        private static <V> Map<String, V> snapshot(Map<String, V> modules) {
            Objects.requireNonNull(modules, "modules must not be null");
            return Collections.unmodifiableMap(new LinkedHashMap<>(modules));
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
         * {@code task_type}, usually one of PEFT's {@link PeftAdapterConfig#TASK_TYPES} (e.g. {@code "CAUSAL_LM"},
         * which PEFT's {@code AutoPeftModelForCausalLM} requires), or null (the default) to write null. Written as
         * given, so that a value read from a file saves back unchanged;
         * {@link io.github.lora4j.model.LoraModel#setTaskType} is the checked setter.
         *
         * @param taskType the task type, or {@code null}
         * @return this saver
         */
        public Saver taskType(String taskType) {
            this.taskType = taskType;
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
         * path, regex operators escaped). Modules may mix weight layouts: {@code lora_A [r, in]} and
         * {@code lora_B [out, r]} are stored alike for {@code [out, in]} and {@code [in, out]} weights, and PEFT sets
         * {@code fan_in_fan_out} per layer type itself; the file's flag is true when most saved linear modules are
         * {@code [in, out]}. The safetensors metadata holds {@code format: pt} and lora4j's provenance:
         * {@code lora4j.version}, {@code lora4j.init}, {@code lora4j.seed}, {@code lora4j.layout} ({@code OUT_IN},
         * {@code IN_OUT} or {@code MIXED}).
         *
         * <p>Module paths follow the rule {@link #read} applies: dot-separated names, none empty or blank (no
         * {@code x..y}, {@code x.}, {@code .x}) and none a name PEFT's tensor keys give a role ({@code lora_A},
         * {@code lora_B}, {@code lora_embedding_A}, {@code lora_embedding_B}, {@code lora_magnitude_vector},
         * {@code modules_to_save}, {@code original_module}, {@code base_layer}, {@code lora_dropout}); a path
         * breaking it is refused before anything is written, whatever named the module (a model, a DL4J layer, a
         * SameDiff variable).
         *
         * @param dir         the target directory, created if absent; not {@code null}
         * @param adapterName the adapter to write; not {@code null}
         * @throws IllegalArgumentException if no module has the adapter; modules differ in dropout or rsLoRA (PEFT has
         *                                  one value of each); a module path breaks the rule above or appears twice;
         *                                  A, B or a full tensor holds NaN or infinity (naming the module) or a
         *                                  value overflowing the file type; nothing is written then
         * @throws IOException              if writing fails; existing files are then left as they were
         * @throws NullPointerException     if {@code dir} or {@code adapterName} is {@code null}
         */
        public void save(Path dir, String adapterName) throws IOException {
            save(dir, adapterName, SafeFiles.OPS.get());
        }

        /**
         * Writes several adapters into {@code dir} the way PEFT's {@code save_pretrained} does with several adapters:
         * adapter {@code "default"} at the top of {@code dir}, every other adapter in the subfolder {@code dir/<name>}
         * (PEFT loads one with {@code PeftModel.from_pretrained(model, dir)} and
         * {@code model.load_adapter(dir + "/" + name, adapter_name=name)}; lora4j with
         * {@link io.github.lora4j.model.LoraModel#load(Path)}). Each adapter is written as {@link #save} writes one.
         *
         * <p>All or nothing: every adapter is first checked and written into a hidden staging folder inside
         * {@code dir} ({@code .lora4j-staging-<random>}, removed afterwards); only then are the folders replaced, one
         * by one, each as {@link #save} replaces files. If replacing one fails, the folders replaced before it get
         * their old files back (a subfolder that did not exist is removed), so {@code dir} holds what it held before,
         * apart from {@link SafeFiles#LOCK_FILE} files. Subfolders of adapters not named here are left alone. Saves of
         * several adapters into one folder from two threads at once may interleave folder by folder: save a folder
         * from one thread at a time.
         *
         * @param dir          the folder, created if absent (and removed again if the save fails)
         * @param adapterNames the adapters to write, each once; each must be usable as a folder name: not blank, no
         *                     leading {@code '.'}, no {@code '/'}, {@code '\'}, {@code ':'} or control characters, not
         *                     a file name of the folder (so {@code "../x"} or an absolute path is refused)
         * @throws IllegalArgumentException for an empty list, a repeated or unusable name, or as {@link #save} for
         *                                  any adapter; nothing is written then
         * @throws IOException              if writing fails; {@code dir} is then as it was (see above)
         */
        public void saveAll(Path dir, List<String> adapterNames) throws IOException {
            AdapterFolders.saveAll(this, dir, adapterNames);
        }

        void save(Path dir, String adapterName, FileOps ops) throws IOException {
            Objects.requireNonNull(dir, "dir must not be null");
            Objects.requireNonNull(adapterName, "adapterName must not be null");
            Safetensors.Dtype dtype = Safetensors.Dtype.of(fileType);
            SavePlan p = SavePlan.of(this, adapterName);
            Map<String, SafeFiles.Content> files = new LinkedHashMap<>();
            // Model first, config last: a crash between the renames pairs new weights with the old config at worst.
            files.put(MODEL_FILE, ch -> Safetensors.write(ch, p.tensors(), p.metadata(), dtype));
            files.put(CONFIG_FILE, SafeFiles.bytes(p.config().toJson()));
            SafeFiles.write(dir, files, ops);
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
     * The adapters of a folder in PEFT's several-adapter layout ({@link Saver#saveAll}): {@code "default"} if
     * {@code dir} itself holds {@value #CONFIG_FILE}, then every subfolder holding one, by name. Nothing is read but
     * the directory listing: read or load each folder to check its files. Hidden entries, files and symbolic links
     * are skipped.
     *
     * @param dir the folder; not {@code null}
     * @return adapter name to its folder, {@code "default"} first, then by name; empty when there is no adapter
     * @throws NoSuchFileException    if {@code dir} is not a directory
     * @throws AdapterFormatException if the folder has more than 4096 entries, a subfolder named {@code "default"}
     *                                holds an adapter (PEFT writes that one at the top), or an adapter subfolder's name
     *                                could not be written back ({@link Saver#saveAll}'s rule)
     * @throws IOException            if listing fails
     */
    public static Map<String, Path> adapterFolders(Path dir) throws IOException {
        return AdapterFolders.list(dir);
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
        SafeFiles.requireRegularFile(configFile, PeftAdapterConfig.MAX_CONFIG_BYTES);
        SafeFiles.requireRegularFile(modelFile, Long.MAX_VALUE);
        byte[] configJson = SafeFiles.readBounded(configFile, PeftAdapterConfig.MAX_CONFIG_BYTES);
        try (SeekableByteChannel ch = Files.newByteChannel(modelFile, StandardOpenOption.READ)) {
            return read(configJson, ch, check);
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
        Map<String, INDArray> magnitudes = new TreeMap<>();
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
                case "mag":
                    magnitudes.put(role[0], data);
                    break;
                default:
                    full.computeIfAbsent(role[0], m -> new TreeMap<>()).put(role[2], data);
            }
        }
        return new PeftAdapter(layout, as, bs, full, baseCopies, magnitudes);
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
     *                                  the layer, a scaling or value that is not
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
        return AdapterLoader.load(dir, linears, embeddings, convs, adapterName, fullTensorCheck);
    }
}
