package io.github.lora4j.model;

import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraConv2d;
import io.github.lora4j.LoraEmbedding;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.LoraModule;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import net.jqwik.api.constraints.Size;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * {@link LoraModel}'s one module table against a reference of which modules are targeted, which have a
 * modules_to_save copy and whether copies are in use: after every call of a random sequence, the per-kind views
 * (taken once, before the calls: they are live), the module look-ups, {@code modulesToSave()} and the parameter
 * counts agree with the reference.
 */
class ModuleTableTest {

    private static final String Q = "l.q";
    private static final String K = "l.k";
    private static final String EMB = "embed";
    private static final String CONV = "conv";
    private static final String NORM = "norm";
    private static final List<String> PATHS = List.of(Q, EMB, K, CONV);

    @Property(tries = 120)
    void viewsAndLookUpsFollowEveryCall(@ForAll @Size(max = 12) List<@IntRange(min = 0, max = 9) Integer> calls,
                                         @ForAll @IntRange(min = 0, max = 15) int targetMask) {
        Map<String, INDArray> weights = new LinkedHashMap<>();
        weights.put(Q, gaussian(DataType.FLOAT, 1, 0.5, 4, 6));
        weights.put(EMB, gaussian(DataType.FLOAT, 2, 0.5, 10, 6));
        weights.put(K, gaussian(DataType.FLOAT, 3, 0.5, 4, 6));
        weights.put(CONV, gaussian(DataType.FLOAT, 4, 0.5, 3, 2, 3, 3));
        LoraModel model = LoraModel.builder().linear(Q, weights.get(Q), null).embedding(EMB, weights.get(EMB))
                .parametersOnly(NORM, 12).linear(K, weights.get(K), null)
                .conv2d(CONV, weights.get(CONV), null, new int[] {1, 1}, new int[] {1, 1}).build();
        Map<String, LoraLinear> linears = model.loraModules();
        Map<String, LoraEmbedding> embeddings = model.loraEmbeddings();
        Map<String, LoraConv2d> convs = model.loraConvs();
        Map<String, Long> only = model.parametersOnlyModules();

        Set<String> targeted = new LinkedHashSet<>();
        Map<String, INDArray> copies = new LinkedHashMap<>();
        boolean[] copiesOn = {true};
        boolean adaptersOff = false;
        long seed = 10;
        for (int call : calls) {
            switch (call) {
                case 0, 1 -> {                                           // apply LoRA to the masked modules
                    List<String> names = new ArrayList<>();
                    for (int i = 0; i < PATHS.size(); i++) {
                        if ((targetMask >> i & 1) != 0 && !copies.containsKey(PATHS.get(i))) {
                            names.add(PATHS.get(i));
                        }
                    }
                    if (!targeted.isEmpty() || names.isEmpty()) {
                        assertThrows(RuntimeException.class, () -> model.applyLora(LoraConfig.builder().rank(2)
                                .build(), names.isEmpty() ? List.of("nothing") : names));
                    } else {
                        model.applyLora(LoraConfig.builder().rank(2).build(), names);
                        targeted.addAll(names);
                        adaptersOff = false;
                    }
                }
                case 2, 3 -> {                                           // a modules_to_save copy of q or embed
                    String p = call == 2 ? Q : EMB;
                    INDArray w = gaussian(DataType.FLOAT, seed++, 0.5, weights.get(p).shape());
                    if (targeted.contains(p) || !copies.isEmpty()) {
                        assertThrows(IllegalArgumentException.class, () -> model.setModuleToSave(p, w, null));
                    } else {
                        model.setModuleToSave(p, w, null);
                        copies.put(p, w);
                    }
                }
                case 4 -> {
                    model.setModulesToSaveEnabled(false);
                    copiesOn[0] = false;
                }
                case 5 -> {
                    model.setModulesToSaveEnabled(true);
                    copiesOn[0] = true;
                }
                case 6 -> {
                    model.unloadModulesToSave();
                    copies.clear();
                    copiesOn[0] = true;
                }
                case 7 -> {                                              // merge_and_unload keeps the copies in use
                    if (adaptersOff && !targeted.isEmpty()) {
                        assertThrows(IllegalStateException.class, model::mergeAndUnload);
                        break;
                    }
                    Map<String, INDArray> plain = model.mergeAndUnload();
                    for (String p : PATHS) {
                        INDArray expected = copiesOn[0] && copies.containsKey(p) ? copies.get(p) : weights.get(p);
                        assertSame(expected, plain.get(p), p);
                        weights.put(p, expected);
                    }
                    targeted.clear();
                    copies.clear();
                    copiesOn[0] = true;
                }
                case 8 -> {
                    model.disableAdapters();
                    copiesOn[0] = false;
                    adaptersOff = true;
                }
                default -> {
                    model.enableAdapters();
                    copiesOn[0] = true;
                    adaptersOff = false;
                }
            }
            check(model, weights, targeted, copies, copiesOn[0], linears, embeddings, convs, only);
        }
    }

    private static void check(LoraModel model, Map<String, INDArray> weights, Set<String> targeted,
                              Map<String, INDArray> copies, boolean copiesOn, Map<String, LoraLinear> linears,
                              Map<String, LoraEmbedding> embeddings, Map<String, LoraConv2d> convs,
                              Map<String, Long> only) {
        assertEquals(PATHS, model.modulePaths());
        assertEquals(Map.of(NORM, 12L), only);
        assertEquals(targeted.stream().filter(p -> p.startsWith("l.")).toList(), List.copyOf(linears.keySet()));
        assertEquals(targeted.contains(EMB) ? List.of(EMB) : List.of(), List.copyOf(embeddings.keySet()));
        assertEquals(targeted.contains(CONV) ? List.of(CONV) : List.of(), List.copyOf(convs.keySet()));
        assertEquals(PATHS.stream().filter(copies::containsKey).toList(), model.modulesToSave());
        long total = 12;
        long trainable = 0;
        for (String p : PATHS) {
            INDArray inUse = copiesOn && copies.containsKey(p) ? copies.get(p) : weights.get(p);
            LoraModule layer = p.equals(EMB) ? model.embedding(p) : p.equals(CONV) ? model.conv2d(p) : model.module(p);
            assertSame(inUse, ModuleSet.weightOf(layer), p + ": the layer in use");
            if (linears.containsKey(p)) {
                assertSame(layer, linears.get(p), p);
            }
            total += copies.containsKey(p) ? weights.get(p).length() + copies.get(p).length()
                    : layer.totalParameterCount();
            trainable += targeted.contains(p) ? layer.trainableParameterCount() : 0;
            trainable += copiesOn && copies.containsKey(p) ? copies.get(p).length() : 0;
        }
        assertEquals(total, model.totalParameterCount(), "original and copy both counted, norm too");
        assertEquals(trainable, model.trainableParameterCount());
    }
}
