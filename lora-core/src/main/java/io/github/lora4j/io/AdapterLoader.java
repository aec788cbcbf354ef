package io.github.lora4j.io;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraConv2d;
import io.github.lora4j.LoraEmbedding;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.io.PeftAdapterLayout.Kind;
import io.github.lora4j.io.PeftAdapterLayout.LoraModule;
import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.TreeSet;
import java.util.function.Consumer;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * {@link PeftAdapterFiles#load}: checks a file's layout against the model's layers before any tensor is read, then
 * converts every tensor to its layer's type, then adds the adapter to each layer, taking it out again from all of
 * them if one fails.
 */
final class AdapterLoader {

    private AdapterLoader() {
    }

    /** See {@link PeftAdapterFiles#load(Path, Map, Map, Map, String, Consumer)}. */
    static PeftAdapter load(Path dir, Map<String, LoraLinear> linears, Map<String, LoraEmbedding> embeddings,
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
        PeftAdapter adapter = PeftAdapterFiles.read(dir, layout -> {
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
            INDArray m = adapter.storedMagnitude(module);
            prepared.put(module, new INDArray[] {convert(adapter.storedA(module), type, owner, "lora_A"),
                convert(adapter.storedB(module), type, owner, "lora_B"),
                m == null ? null : convert(m, type, owner, PeftAdapterLayout.MAGNITUDE)});
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
                    if (p.getValue()[2] != null) {
                        linear.setAdapterWeights(adapterName, p.getValue()[0], p.getValue()[1], p.getValue()[2]);
                    } else {
                        linear.setAdapterWeights(adapterName, p.getValue()[0], p.getValue()[1]);
                    }
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
            if (names.contains(adapterName)) {
                throw new IllegalArgumentException("module '" + module + "': expected adapter name '" + adapterName
                        + "' to be free, but the layer already has adapters " + names);
            }
            LoraConfig cfg;
            try {
                cfg = config.toLoraConfig(module);
            } catch (IllegalArgumentException ex) {
                throw new IllegalArgumentException(PeftAdapterFiles.CONFIG_FILE + ": module '" + module + "': " + ex.getMessage(), ex);
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
            throw new AdapterFormatException(PeftAdapterFiles.MODEL_FILE + ": " + owner + " " + tensor
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
