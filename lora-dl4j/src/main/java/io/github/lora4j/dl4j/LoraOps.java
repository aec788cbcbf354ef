package io.github.lora4j.dl4j;

import static io.github.lora4j.dl4j.LoraParamInitializer.BIAS_KEY;
import static io.github.lora4j.dl4j.LoraParamInitializer.LORA_A_KEY;
import static io.github.lora4j.dl4j.LoraParamInitializer.LORA_B_KEY;
import static io.github.lora4j.dl4j.LoraParamInitializer.WEIGHT_KEY;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraInit;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.MergeMode;
import io.github.lora4j.WeightLayout;
import java.util.Arrays;
import java.util.Map;
import org.deeplearning4j.exception.DL4JInvalidInputException;
import org.deeplearning4j.nn.gradient.Gradient;
import org.deeplearning4j.nn.workspace.ArrayType;
import org.deeplearning4j.nn.workspace.LayerWorkspaceMgr;
import org.nd4j.linalg.api.memory.MemoryWorkspace;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * The arithmetic of one LoRA layer, shared by {@link LoraDenseLayerImpl} and {@link LoraOutputLayerImpl}, and its
 * merge state. With {@code W [nIn, nOut]} (DL4J's layout), {@code A [r, nIn]}, {@code B [nOut, r]}:
 * <pre>
 *   forward   z = x W + b + s·u Bᵀ,  u = x Aᵀ [n, r]
 *   backward  gB = g B [n, r];  dB = s·gᵀ u;  dA = s·gBᵀ x;  dx = g Wᵀ + s·gB A   (no dW, no db)
 * </pre>
 * The base part {@code x W + b} is computed exactly as DL4J's {@code BaseLayer} does (same mmul, same bias add),
 * so with {@code B = 0} the output is DL4J's, bit for bit.
 */
final class LoraOps {

    private final LoraLayerConf conf;
    private double scaling;
    /** The lora-core layer holding the exact-merge record while merged in this process; null otherwise. */
    private LoraLinear mergedHere;

    LoraOps(LoraLayerConf conf) {
        this.conf = conf;
        settingsChanged();
    }

    /** Takes the scaling from the configuration again, after {@link LoraDl4j#loadAdapter} changed its alpha. */
    void settingsChanged() {
        this.scaling = conf.lora() == null ? 0 : conf.loraConfig().scaling();
    }

    boolean hasAdapter() {
        return conf.lora() != null;
    }

    /**
     * {@code {z, u}} for input {@code x [n, nIn]}: {@code u} is null without adapter or while merged ({@code W} then
     * holds the update). Arrays go to the given workspaces: {@code z} to ACTIVATIONS, {@code u} to {@code uType}.
     */
    INDArray[] preOutput(INDArray input, Map<String, INDArray> params, LayerWorkspaceMgr mgr, ArrayType uType,
            String layerId) {
        INDArray w = params.get(WEIGHT_KEY);
        if (input.rank() != 2 || input.columns() != w.rows()) {
            throw new DL4JInvalidInputException("expected input [minibatch, " + w.rows() + "] (nIn " + w.rows()
                    + "), got shape " + Arrays.toString(input.shape()) + " " + layerId);
        }
        INDArray x = input.castTo(w.dataType());
        INDArray z = mgr.createUninitialized(ArrayType.ACTIVATIONS, w.dataType(), x.size(0), w.size(1));
        x.mmuli(w, z); // as DL4J's BaseLayer.preOutputWithPreNorm, for a bitwise-equal base output
        if (conf.hasBias()) {
            z.addiRowVector(params.get(BIAS_KEY));
        }
        INDArray u = null;
        if (hasAdapter() && !conf.merged()) {
            INDArray a = params.get(LORA_A_KEY);
            u = mgr.createUninitialized(uType, w.dataType(), x.size(0), a.rows());
            Nd4j.gemm(x, a, u, false, true, 1.0, 0.0);                              // u = x Aᵀ      [n, r]
            Nd4j.gemm(u, params.get(LORA_B_KEY), z, false, true, scaling, 1.0);    // z += s u Bᵀ   [n, nOut]
        }
        return new INDArray[] {z, u};
    }

    /**
     * Fills {@code gradient} with {@code loraA}/{@code loraB} (written into the network's gradient views) and returns
     * {@code dL/dx [n, nIn]}; {@code delta = dL/dz [n, nOut]} (after activation and mask).
     */
    INDArray backward(INDArray input, INDArray u, INDArray delta, Map<String, INDArray> params,
            Map<String, INDArray> gradientViews, Gradient gradient, LayerWorkspaceMgr mgr, String layerId) {
        if (conf.merged()) {
            throw new IllegalStateException("cannot train layer " + layerId
                    + ": its adapter is merged into W; LoraDl4j.unmerge(net) first");
        }
        INDArray w = params.get(WEIGHT_KEY);
        INDArray g = delta.castTo(w.dataType());
        INDArray dx = mgr.createUninitialized(ArrayType.ACTIVATION_GRAD, w.dataType(), g.size(0), w.size(0));
        Nd4j.gemm(g, w, dx, false, true, 1.0, 0.0);                                  // dx = g Wᵀ     [n, nIn]
        if (hasAdapter()) {
            INDArray x = input.castTo(w.dataType());
            INDArray a = params.get(LORA_A_KEY);
            INDArray gradA = gradientViews.get(LORA_A_KEY);
            INDArray gradB = gradientViews.get(LORA_B_KEY);
            INDArray gB = mgr.createUninitialized(ArrayType.BP_WORKING_MEM, w.dataType(), g.size(0), a.rows());
            Nd4j.gemm(g, params.get(LORA_B_KEY), gB, false, false, 1.0, 0.0);     // gB = g B      [n, r]
            Nd4j.gemm(g, u, gradB, true, false, scaling, 0.0);                     // dB = s gᵀ u   [nOut, r]
            Nd4j.gemm(gB, x, gradA, true, false, scaling, 0.0);                    // dA = s gBᵀ x  [r, nIn]
            Nd4j.gemm(gB, a, dx, false, false, scaling, 1.0);                      // dx += s gB A
            gradient.gradientForVariable().put(LORA_A_KEY, gradA);
            gradient.gradientForVariable().put(LORA_B_KEY, gradB);
        }
        return dx;
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
