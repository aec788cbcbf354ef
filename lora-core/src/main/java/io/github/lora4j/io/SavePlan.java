package io.github.lora4j.io;

import io.github.lora4j.Lora4j;
import io.github.lora4j.LoraAdapter;
import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraConv2d;
import io.github.lora4j.LoraEmbedding;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.WeightLayout;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.TreeMap;
import java.util.TreeSet;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * What one {@link PeftAdapterFiles.Saver#save} writes, computed and checked before any file is touched: the
 * tensors by safetensors key (copies, taken under each layer's lock), the config with {@code rank_pattern} /
 * {@code alpha_pattern} for modules that differ from the most common rank and alpha, and the metadata with lora4j's
 * provenance. Building it throws for anything PEFT could not read back as saved; nothing is written then.
 */
record SavePlan(PeftAdapterConfig config, Map<String, INDArray> tensors, Map<String, String> metadata) {

    /** The plan for adapter {@code adapterName} of everything {@code s} was given. */
    static SavePlan of(PeftAdapterFiles.Saver s, String adapterName) {
        Map<String, INDArray> tensors = new TreeMap<>();
        TreeSet<String> lastNames = new TreeSet<>();
        Map<String, LoraConfig> configs = new TreeMap<>();
        for (Map<String, ?> m : List.of(s.linears, s.embeddings, s.convs, s.modulesToSave)) {
            if (m.containsKey(null)) {
                throw new IllegalArgumentException("module paths must not be blank, got 'null'");
            }
        }
        // Modules of each weight layout: lora_A [r, in] and lora_B [out, r] are stored alike for both, so a model may
        // mix them (GPT-2's Conv1D beside an [out, in] head); PEFT itself sets fan_in_fan_out per layer type.
        int inOut = 0;
        int outIn = 0;
        for (Map.Entry<String, LoraLinear> m : new TreeMap<>(s.linears).entrySet()) {
            String module = checkPath(m.getKey(), configs);
            LoraLinear layer = Objects.requireNonNull(m.getValue(), "layer of module '" + module + "'");
            if (!layer.adapterNames().contains(adapterName)) {
                continue;
            }
            if (layer.layout() == WeightLayout.IN_OUT) {
                inOut++;
            } else {
                outIn++;
            }
            LoraAdapter adapter = layer.adapter(adapterName);
            putPair(tensors, module, PeftAdapterLayout.A_SUFFIX, PeftAdapterLayout.B_SUFFIX, adapter);
            if (adapter.isDora()) {
                INDArray mag = adapter.magnitude().dup('c');                 // [out], PEFT's 1-D magnitude
                requireFinite(mag, "module '" + module + "' " + PeftAdapterLayout.MAGNITUDE);
                tensors.put(PeftAdapterLayout.PREFIX + module + PeftAdapterLayout.MAGNITUDE_SUFFIX, mag);
            }
            configs.put(module, effectiveConfig(module, adapter));
            lastNames.add(module.substring(module.lastIndexOf('.') + 1));
        }
        for (AdapterTensors t : s.tensors.getOrDefault(adapterName, List.of())) {
            // Bare tensors: already private copies (Saver.adapterTensors), shapes checked by the record.
            String module = checkPath(t.module(), configs);
            if (t.layout() == WeightLayout.IN_OUT) {
                inOut++;
            } else {
                outIn++;
            }
            requireFinite(t.a(), "module '" + module + "' lora_A");
            requireFinite(t.b(), "module '" + module + "' lora_B");
            tensors.put(PeftAdapterLayout.PREFIX + module + PeftAdapterLayout.A_SUFFIX, t.a());
            tensors.put(PeftAdapterLayout.PREFIX + module + PeftAdapterLayout.B_SUFFIX, t.b());
            if (t.magnitude() != null) {
                requireFinite(t.magnitude(), "module '" + module + "' " + PeftAdapterLayout.MAGNITUDE);
                tensors.put(PeftAdapterLayout.PREFIX + module + PeftAdapterLayout.MAGNITUDE_SUFFIX, t.magnitude());
            }
            configs.put(module, t.config());
            lastNames.add(module.substring(module.lastIndexOf('.') + 1));
        }
        for (Map.Entry<String, LoraEmbedding> m : new TreeMap<>(s.embeddings).entrySet()) {
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
        for (Map.Entry<String, LoraConv2d> m : new TreeMap<>(s.convs).entrySet()) {
            String module = checkPath(m.getKey(), configs);
            LoraConv2d layer = Objects.requireNonNull(m.getValue(), "layer of module '" + module + "'");
            if (!layer.adapterNames().contains(adapterName)) {
                continue;
            }
            INDArray a = layer.loraA(adapterName);
            INDArray b = layer.loraB(adapterName);
            requireFinite(a, "module '" + module + "' lora_A");
            requireFinite(b, "module '" + module + "' lora_B");
            tensors.put(PeftAdapterLayout.PREFIX + module + PeftAdapterLayout.A_SUFFIX, a);
            tensors.put(PeftAdapterLayout.PREFIX + module + PeftAdapterLayout.B_SUFFIX, b);
            configs.put(module, effectiveConfig(module, layer.adapter(adapterName)));
            lastNames.add(module.substring(module.lastIndexOf('.') + 1));
        }
        if (configs.isEmpty()) {
            throw new IllegalArgumentException("no module has adapter '" + adapterName + "'; expected at least one of "
                    + (s.linears.size() + s.embeddings.size() + s.convs.size()) + " modules to have it"
                    + (s.tensors.isEmpty() ? "" : " (adapter tensors were given for " + s.tensors.keySet() + ")"));
        }
        for (Map.Entry<String, Map<String, INDArray>> m : new TreeMap<>(s.modulesToSave).entrySet()) {
            String module = ModulePaths.requireSavable(m.getKey(), "modules_to_save module");
            if (configs.containsKey(module)) {
                throw new IllegalArgumentException("modules_to_save module '" + module + "' must be a path without "
                        + "LoRA tensors; LoRA modules: " + configs.keySet());
            }
            for (Map.Entry<String, INDArray> t : m.getValue().entrySet()) {
                if (!t.getKey().equals("weight") && !t.getKey().equals("bias")) {
                    throw new IllegalArgumentException("modules_to_save module '" + module + "': expected "
                            + "parameters 'weight' and 'bias', got '" + t.getKey() + "'");
                }
                INDArray v = Objects.requireNonNull(t.getValue(), module + "." + t.getKey());
                requireFinite(v, "modules_to_save module '" + module + "' " + t.getKey());
                // Saver.modulesToSave already took a private c-order copy.
                tensors.put(PeftAdapterLayout.PREFIX + module + "." + t.getKey(), v);
            }
        }

        Map.Entry<String, LoraConfig> first = configs.entrySet().iterator().next();
        Map<Integer, Integer> rankCount = new TreeMap<>();
        Map<Double, Integer> alphaCount = new TreeMap<>();
        for (Map.Entry<String, LoraConfig> c : configs.entrySet()) {
            LoraConfig f = first.getValue();
            if (Double.compare(c.getValue().dropout(), f.dropout()) != 0 || c.getValue().rsLora() != f.rsLora()
                    || c.getValue().useDora() != f.useDora()) {
                throw new IllegalArgumentException("adapter '" + adapterName + "' of module '" + c.getKey()
                        + "' has dropout=" + c.getValue().dropout() + ", rsLora=" + c.getValue().rsLora() + ", useDora="
                        + c.getValue().useDora() + ", but module '" + first.getKey() + "' has dropout=" + f.dropout()
                        + ", rsLora=" + f.rsLora() + ", useDora=" + f.useDora() + "; a PEFT file holds one "
                        + "lora_dropout, use_rslora and use_dora for all modules");
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
                rankPattern.put(PatternKeys.literal(module), c.rank());
            }
            if (Double.compare(c.alpha(), alpha) != 0) {
                alphaPattern.put(PatternKeys.literal(module), c.alpha());
            }
        });
        List<String> targetList = s.targetRegex != null ? List.of() : s.targets != null ? s.targets
                : new ArrayList<>(lastNames);
        List<String> saveList = s.modulesToSave.isEmpty() ? null : new ArrayList<>(new TreeSet<>(s.modulesToSave.keySet()));
        LoraConfig f = first.getValue();
        PeftAdapterConfig config = new PeftAdapterConfig(r, alpha, f.dropout(), targetList, s.targetRegex, f.rsLora(),
                f.useDora(), inOut > outIn, "none", rankPattern, alphaPattern, saveList, s.baseModel, s.taskType, null);
        // The patterns must give each module back its own rank and alpha when PEFT (or read) resolves them.
        configs.forEach((module, c) -> {
            if (config.rankOf(module) != c.rank() || Double.compare(config.alphaOf(module), c.alpha()) != 0) {
                throw new IllegalArgumentException("module '" + module + "' (r=" + c.rank() + ", alpha=" + c.alpha()
                        + ") would read back as r=" + config.rankOf(module) + ", alpha=" + config.alphaOf(module)
                        + " through rank_pattern/alpha_pattern; rename modules whose paths match each other");
            }
        });
        LoraConfig origin = s.provenance != null ? s.provenance : f;
        Map<String, String> metadata = new LinkedHashMap<>();
        metadata.put("format", "pt");
        metadata.put("lora4j.version", Lora4j.version());
        metadata.put("lora4j.init", origin.init().name());
        metadata.put("lora4j.seed", Long.toString(origin.seed()));
        metadata.put("lora4j.layout", inOut > 0 && outIn > 0 ? "MIXED" : inOut > 0 ? WeightLayout.IN_OUT.name()
                : WeightLayout.OUT_IN.name());
        return new SavePlan(config, tensors, metadata);
    }

    private static String checkPath(String module, Map<String, LoraConfig> seen) {
        if (module == null || module.isBlank()) {
            throw new IllegalArgumentException("module paths must not be blank, got '" + module + "'");
        }
        ModulePaths.requireSavable(module, "module");
        if (seen.containsKey(module)) {
            throw new IllegalArgumentException("module '" + module + "' appears in more than one of the linear, "
                    + "embedding and conv maps and the adapter tensors; expected each module once");
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
        tensors.put(PeftAdapterLayout.PREFIX + module + aSuffix, a);
        tensors.put(PeftAdapterLayout.PREFIX + module + bSuffix, b);
    }

    private static <K> K mostCommon(Map<K, Integer> counts) {
        return counts.entrySet().stream().max(Comparator.comparingInt(Map.Entry::getValue)).orElseThrow().getKey();
    }


    private static void requireFinite(INDArray x, String what) {
        if (x.isNaN().any() || x.isInfinite().any()) {
            throw new IllegalArgumentException(what + ": expected finite values, found NaN or infinity; nothing was "
                    + "written (a file with them would not load)");
        }
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
}
