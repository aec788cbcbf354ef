package io.github.lora4j.dl4j;

import static io.github.lora4j.dl4j.LoraParamInitializer.BIAS_KEY;
import static io.github.lora4j.dl4j.LoraParamInitializer.LORA_A_KEY;
import static io.github.lora4j.dl4j.LoraParamInitializer.LORA_B_KEY;
import static io.github.lora4j.dl4j.LoraParamInitializer.WEIGHT_KEY;

import io.github.lora4j.DropoutStream;
import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraInit;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.MergeMode;
import io.github.lora4j.WeightLayout;
import java.util.Arrays;
import java.util.Map;
import org.deeplearning4j.exception.DL4JInvalidInputException;
import org.deeplearning4j.nn.conf.layers.Layer;
import org.deeplearning4j.nn.gradient.DefaultGradient;
import org.deeplearning4j.nn.gradient.Gradient;
import org.deeplearning4j.nn.workspace.ArrayType;
import org.deeplearning4j.nn.workspace.LayerWorkspaceMgr;
import org.nd4j.common.primitives.Pair;
import org.nd4j.linalg.api.memory.MemoryWorkspace;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * The one delegate of the LoRA layer classes ({@link LoraDenseLayerImpl}, {@link LoraOutputLayerImpl},
 * {@link LoraRnnOutputLayerImpl}): their arithmetic, their LoRA dropout and their merge state. DL4J's class hierarchy
 * makes the three extend different DL4J classes, whose input, parameters and masks are protected; each passes them in,
 * and keeps only what differs: how its input becomes {@code x [n, nIn]} and how its output gradient is found. With
 * {@code W [nIn, nOut]} (DL4J's layout), {@code A [r, nIn]}, {@code B [nOut, r]}, the dropout mask {@code m} and
 * {@code q = 1/(1 − p)}:
 * <pre>
 *   forward   z = x W + b + s·u Bᵀ,  u = q·(x ⊙ m) Aᵀ [n, r]          (m = 1, q = 1 outside training or for p = 0)
 *   backward  gB = g B [n, r];  dB = s·gᵀ u;  dA = s·q·gBᵀ (x ⊙ m);  dx = g Wᵀ + s·q·(gB A) ⊙ m   (no dW, no db)
 * </pre>
 * The base part {@code x W + b} is computed exactly as DL4J's {@code BaseLayer} does (same mmul, same bias add),
 * so with {@code B = 0} the output is DL4J's, bit for bit.
 *
 * <h2>Dropout on the LoRA input</h2>
 * As PEFT applies it: only the LoRA path sees {@code dropout(x)}, only in training, after the layer's own input
 * dropout. One mask per input: it is drawn ({@link DropoutStream}, from the adapter's configuration for this layer's
 * name, so the masks are those a lora-core {@code LoraLinear} of that configuration draws) by the first training
 * forward after {@link #newInput()}, and every later forward and backward of that input reuses it: DL4J computes a
 * layer's forward twice per step (once to feed the next layer, once again in backprop) and scores the output layer
 * after its backprop, and all three see the same mask. The stream restarts whenever the layer is built
 * ({@code apply}, {@code clone}, restoring a saved network).
 */
final class LoraOps {

    /** One forward: the layer input as used ({@code x}), {@code z}, and what backward needs. */
    record Forward(INDArray x, INDArray z, INDArray u, INDArray xLora, INDArray mask, double q) {
    }

    private final LoraLayerConf conf;
    private double scaling;
    private double dropout;
    /** The mask stream of the layer; null without adapter or dropout. */
    private DropoutStream masks;
    /** The mask of the current input ({@code [n, nIn]}, 0 or 1, the network's data type), or null. */
    private INDArray mask;
    /** The lora-core layer holding the exact-merge record while merged in this process; null otherwise. */
    private LoraLinear mergedHere;

    LoraOps(LoraLayerConf conf) {
        this.conf = conf;
        settingsChanged();
    }

    /**
     * Takes scaling and dropout from the configuration again, after {@link LoraDl4j#loadAdapter} changed its alpha or
     * dropout; the mask stream restarts only when the dropout changes.
     */
    void settingsChanged() {
        LoraConfig c = conf.loraConfig();
        this.scaling = c == null ? 0 : c.scaling();
        double p = c == null ? 0 : c.dropout();
        if (p != dropout || (p > 0 && masks == null)) {
            masks = p > 0 ? DropoutStream.of(c.forModule(LoraParamInitializer.modulePath(((Layer) conf).getLayerName())))
                    : null;
            mask = null;
        }
        this.dropout = p;
    }

    boolean hasAdapter() {
        return conf.lora() != null;
    }

    /** Forgets the dropout mask: the layer has a new input (DL4J's {@code setInput}, {@code clear}). */
    void newInput() {
        mask = null;
    }

    /**
     * The mask of the current input, as the last training forward drew it (for tests).
     *
     * @return the {@code [n, nIn]} 0/1 mask, or null
     */
    INDArray currentMask() {
        return mask;
    }

    /**
     * The forward for input {@code x [n, nIn]}: {@code u} is null without adapter or while merged ({@code W} then
     * holds the update). Arrays go to the given workspaces: {@code z} to ACTIVATIONS, the rest to FF or BP working
     * memory ({@code forBackprop}). The caller applies DL4J's mask to {@code z} where its base layer does.
     */
    Forward forward(INDArray input, Map<String, INDArray> params, boolean training, boolean forBackprop,
            LayerWorkspaceMgr mgr, String layerId) {
        return forward(input, params, training, forBackprop, 'c', mgr, layerId);
    }

    /**
     * {@link #forward(INDArray, Map, boolean, boolean, LayerWorkspaceMgr, String)} with {@code z} in the given order:
     * 'c' as DL4J's {@code BaseLayer} makes it, or the order of {@code x.mmul(W)}, which DL4J's
     * {@code RnnOutputLayer.activate} uses ('f' when both are 'f'); the gemm, hence the bits, depend on it.
     */
    Forward forward(INDArray input, Map<String, INDArray> params, boolean training, boolean forBackprop, char zOrder,
            LayerWorkspaceMgr mgr, String layerId) {
        INDArray w = params.get(WEIGHT_KEY);
        if (input.rank() != 2 || input.columns() != w.rows()) {
            throw new DL4JInvalidInputException("expected input [minibatch, " + w.rows() + "] (nIn " + w.rows()
                    + "), got shape " + Arrays.toString(input.shape()) + " " + layerId);
        }
        ArrayType work = forBackprop ? ArrayType.BP_WORKING_MEM : ArrayType.FF_WORKING_MEM;
        INDArray x = input.castTo(w.dataType());
        INDArray z = mgr.createUninitialized(ArrayType.ACTIVATIONS, w.dataType(), new long[] {x.size(0), w.size(1)},
                zOrder);
        x.mmuli(w, z); // as DL4J's BaseLayer.preOutputWithPreNorm, for a bitwise-equal base output
        if (conf.hasBias()) {
            z.addiRowVector(params.get(BIAS_KEY));
        }
        if (!hasAdapter() || conf.merged()) {
            return new Forward(x, z, null, null, null, 1.0);
        }
        INDArray xLora = x;
        INDArray m = null;
        double q = 1.0;
        if (training && dropout > 0) {
            m = maskFor(x);
            xLora = mgr.createUninitialized(work, w.dataType(), x.size(0), x.size(1));
            x.mul(m, xLora);                                                          // x ⊙ m
            q = masks.scale();                                                        // 1/(1-p), into alpha
        }
        INDArray a = params.get(LORA_A_KEY);
        INDArray u = mgr.createUninitialized(work, w.dataType(), x.size(0), a.rows());
        Nd4j.gemm(xLora, a, u, false, true, q, 0.0);                               // u = q (x ⊙ m) Aᵀ  [n, r]
        Nd4j.gemm(u, params.get(LORA_B_KEY), z, false, true, scaling, 1.0);       // z += s u Bᵀ       [n, nOut]
        return new Forward(x, z, u, xLora, m, q);
    }

    /** The mask of the current input: drawn on the first training forward after {@link #newInput()}, then kept. */
    @SuppressWarnings("try") // the scope is the point: the mask must outlive the workspace of this iteration
    private INDArray maskFor(INDArray x) {
        if (mask == null || mask.rows() != x.rows() || mask.columns() != x.columns()
                || mask.dataType() != x.dataType()) {
            boolean[] kept = masks.next(x.length());
            double[] m = new double[kept.length];
            for (int i = 0; i < m.length; i++) {
                m[i] = kept[i] ? 1.0 : 0.0;
            }
            try (MemoryWorkspace ws = Nd4j.getMemoryManager().scopeOutOfWorkspaces()) {
                mask = Nd4j.createFromArray(m).castTo(x.dataType()).reshape('c', x.rows(), x.columns());
            }
        }
        return mask;
    }

    /**
     * Writes the gradients of {@code loraA} and {@code loraB} into the network's gradient views and returns them with
     * {@code dL/dx [n, nIn]} (before the layer's own dropout backprop); {@code delta = dL/dz [n, nOut]} (after
     * activation and mask), {@code f} the forward of this input.
     */
    Pair<Gradient, INDArray> backward(Forward f, INDArray delta, Map<String, INDArray> params,
            Map<String, INDArray> gradientViews, LayerWorkspaceMgr mgr, String layerId) {
        if (conf.merged()) {
            throw new IllegalStateException("cannot train layer " + layerId
                    + ": its adapter is merged into W; LoraDl4j.unmerge(net) first");
        }
        INDArray w = params.get(WEIGHT_KEY);
        INDArray g = delta.castTo(w.dataType());
        INDArray dx = mgr.createUninitialized(ArrayType.ACTIVATION_GRAD, w.dataType(), g.size(0), w.size(0));
        Nd4j.gemm(g, w, dx, false, true, 1.0, 0.0);                                  // dx = g Wᵀ       [n, nIn]
        Gradient gradient = new DefaultGradient();
        if (hasAdapter()) {
            INDArray a = params.get(LORA_A_KEY);
            INDArray gradA = gradientViews.get(LORA_A_KEY);
            INDArray gradB = gradientViews.get(LORA_B_KEY);
            INDArray gB = mgr.createUninitialized(ArrayType.BP_WORKING_MEM, w.dataType(), g.size(0), a.rows());
            Nd4j.gemm(g, params.get(LORA_B_KEY), gB, false, false, 1.0, 0.0);     // gB = g B        [n, r]
            Nd4j.gemm(g, f.u(), gradB, true, false, scaling, 0.0);                // dB = s gᵀ u     [nOut, r]
            Nd4j.gemm(gB, f.xLora(), gradA, true, false, scaling * f.q(), 0.0);   // dA = s q gBᵀ (x ⊙ m)  [r, nIn]
            if (f.mask() == null) {
                Nd4j.gemm(gB, a, dx, false, false, scaling, 1.0);                 // dx += s gB A
            } else {
                INDArray t = mgr.createUninitialized(ArrayType.BP_WORKING_MEM, w.dataType(), g.size(0), a.columns());
                Nd4j.gemm(gB, a, t, false, false, scaling * f.q(), 0.0);          // t = s q gB A    [n, nIn]
                dx.addi(t.muli(f.mask()));                                        // dx += t ⊙ m
            }
            gradient.gradientForVariable().put(LORA_A_KEY, gradA);
            gradient.gradientForVariable().put(LORA_B_KEY, gradB);
        }
        return new Pair<>(gradient, dx);
    }

    /**
     * {@code W += s·(B A)ᵀ} in place, lora-core's {@link MergeMode#EXACT} way, so that {@link #unmerge} restores
     * {@code W} bit for bit.
     */
    @SuppressWarnings("try") // the scope is the point: the merge record must outlive any open workspace
    void merge(Map<String, INDArray> params, String layerId) {
        requireAdapter(layerId);
        if (conf.merged()) {
            throw new IllegalStateException("layer " + layerId + " is already merged; unmerge first");
        }
        try (MemoryWorkspace ws = Nd4j.getMemoryManager().scopeOutOfWorkspaces()) {
            LoraLinear linear = LoraLinear.base(params.get(WEIGHT_KEY), null, WeightLayout.IN_OUT);
            LoraConfig cfg = conf.loraConfig().toBuilder().init(LoraInit.ZERO).build();
            linear.addAdapter(LoraLinear.DEFAULT_ADAPTER, cfg);
            linear.setActiveAdapter(LoraLinear.DEFAULT_ADAPTER);
            try {
                linear.setAdapterWeights(LoraLinear.DEFAULT_ADAPTER, params.get(LORA_A_KEY), params.get(LORA_B_KEY));
            } catch (IllegalArgumentException e) {
                // NaN or infinity in loraA/loraB is the network's state, not a bad argument: LoraDl4j.merge documents
                // IllegalStateException, as LoraLinear.merge throws for a non-finite adapter
                throw new IllegalStateException("cannot merge layer " + layerId + ": " + e.getMessage()
                        + " (diverged training?); W left unchanged", e);
            }
            linear.merge(MergeMode.EXACT);
            mergedHere = linear;
        }
        conf.markMerged(true);
    }

    /**
     * Takes the adapter out of {@code W}: bit-exact after {@link #merge} in this process; for a network restored
     * merged from a file (the exact record is not saved) by one gemm {@code W −= s·(B A)ᵀ}, which may differ from
     * the original {@code W} by an ulp per element.
     */
    void unmerge(Map<String, INDArray> params, String layerId) {
        requireAdapter(layerId);
        if (!conf.merged()) {
            throw new IllegalStateException("layer " + layerId + " is not merged; nothing to unmerge");
        }
        if (mergedHere != null) {
            mergedHere.unmerge();
            mergedHere = null;
        } else {
            Nd4j.gemm(params.get(LORA_A_KEY), params.get(LORA_B_KEY), params.get(WEIGHT_KEY), true, true,
                    -scaling, 1.0);
        }
        conf.markMerged(false);
    }

    /** A new {@code [nIn, nOut]} array {@code W + s·(B A)ᵀ} (W itself when merged); the layer is not changed. */
    INDArray mergedWeight(Map<String, INDArray> params) {
        INDArray w = params.get(WEIGHT_KEY);
        if (!hasAdapter() || conf.merged()) {
            return w.dup('f');
        }
        INDArray out = w.dup('f');
        Nd4j.gemm(params.get(LORA_A_KEY), params.get(LORA_B_KEY), out, true, true, scaling, 1.0);
        return out;
    }

    private void requireAdapter(String layerId) {
        if (!hasAdapter()) {
            throw new IllegalStateException("layer " + layerId + " has no LoRA adapter (it is a frozen base layer)");
        }
    }
}
