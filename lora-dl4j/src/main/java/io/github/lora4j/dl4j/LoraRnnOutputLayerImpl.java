package io.github.lora4j.dl4j;

import java.util.Arrays;
import org.deeplearning4j.nn.conf.NeuralNetConfiguration;
import org.deeplearning4j.nn.conf.RNNFormat;
import org.deeplearning4j.nn.gradient.Gradient;
import org.deeplearning4j.nn.layers.recurrent.RnnOutputLayer;
import org.deeplearning4j.nn.workspace.ArrayType;
import org.deeplearning4j.nn.workspace.LayerWorkspaceMgr;
import org.deeplearning4j.util.TimeSeriesUtils;
import org.nd4j.common.base.Preconditions;
import org.nd4j.common.primitives.Pair;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * The layer of a {@link LoraRnnOutputLayer}: DL4J's {@code RnnOutputLayer} (its masks, labels, per-example scores and
 * evaluation) with the LoRA dense map of {@link LoraOps} at every time step. The input {@code [mb, nIn, T]} (or
 * {@code [mb, T, nIn]} for NWC) is folded to {@code x [mb·T, nIn]} as DL4J's {@code TimeSeriesUtils} folds it, so
 * label masks (reshaped by DL4J to {@code [mb·T, 1]} or {@code [mb·T, nOut]}) line up row by row. Its backward writes
 * the gradients of {@code loraA} and {@code loraB} only and returns {@code dL/dx} in the input's shape.
 */
public class LoraRnnOutputLayerImpl extends RnnOutputLayer implements LoraLayer {

    private static final long serialVersionUID = 1L;

    private transient LoraOps ops;

    /**
     * @param conf     the layer's configuration, holding a {@link LoraRnnOutputLayer}
     * @param dataType the network's data type
     */
    public LoraRnnOutputLayerImpl(NeuralNetConfiguration conf, DataType dataType) {
        super(conf, dataType);
    }

    @Override
    public LoraOps ops() {
        if (ops == null) {
            ops = new LoraOps((LoraLayerConf) layerConf());
        }
        return ops;
    }

    @Override
    public void setInput(INDArray input, LayerWorkspaceMgr workspaceMgr) {
        super.setInput(input, workspaceMgr);
        ops().newInput();
    }

    @Override
    public void clear() {
        super.clear();
        ops().newInput();
    }

    /** The input as {@code [mb·T, nIn]}, DL4J's fold; the input itself when DL4J already folded it (2-D). */
    private INDArray fold(INDArray in, LayerWorkspaceMgr workspaceMgr, ArrayType type) {
        if (in.rank() == 2) {
            return in;
        }
        if (in.rank() != 3) {
            throw new UnsupportedOperationException("expected input [minibatch, nIn, T] (rank 3), got shape "
                    + Arrays.toString(in.shape()) + " " + layerId());
        }
        INDArray ncw = layerConf().getRnnDataFormat() == RNNFormat.NWC ? in.permute(0, 2, 1) : in;
        return TimeSeriesUtils.reshape3dTo2d(ncw, workspaceMgr, type);
    }

    /** {@code [mb·T, n]} back to the input's layout, DL4J's unfold. */
    private INDArray unfold(INDArray twoD, long miniBatch, LayerWorkspaceMgr workspaceMgr, ArrayType type) {
        INDArray ncw = TimeSeriesUtils.reshape2dTo3d(twoD, miniBatch, workspaceMgr, type);
        return layerConf().getRnnDataFormat() == RNNFormat.NWC ? ncw.permute(0, 2, 1) : ncw;
    }

    /**
     * The 2-D pre-output, as DL4J's {@code BaseLayer} computes it (masked {@code z}); DL4J's {@code preOutput2d} calls
     * it with the input already folded.
     */
    @Override
    protected Pair<INDArray, INDArray> preOutputWithPreNorm(boolean training, boolean forBackprop,
            LayerWorkspaceMgr workspaceMgr) {
        INDArray z = forward(training, forBackprop, workspaceMgr).z();
        return new Pair<>(z, z);
    }

    /** Forward of the (folded) input; masks {@code z} as DL4J's BaseLayer does on the score and backprop paths. */
    private LoraOps.Forward forward(boolean training, boolean forBackprop, LayerWorkspaceMgr workspaceMgr) {
        assertInputSet(forBackprop);
        applyDropOutIfNecessary(training, workspaceMgr);
        LoraOps.Forward f = ops().forward(input, params, training, forBackprop, workspaceMgr, layerId());
        if (maskArray != null) {
            applyMask(f.z());
        }
        return f;
    }

    /** As DL4J's {@code RnnOutputLayer.activate}: activation of the unmasked {@code z}, then the mask, unfolded. */
    @Override
    public INDArray activate(boolean training, LayerWorkspaceMgr workspaceMgr) {
        assertInputSet(false);
        if (input.rank() != 3) {
            throw new UnsupportedOperationException("expected input [minibatch, nIn, T] (rank 3), got shape "
                    + Arrays.toString(input.shape()) + " " + layerId());
        }
        applyDropOutIfNecessary(training, workspaceMgr);
        INDArray x = fold(input, workspaceMgr, ArrayType.FF_WORKING_MEM);
        INDArray w = params.get(LoraParamInitializer.WEIGHT_KEY);
        char order = x.ordering() == 'f' && w.ordering() == 'f' ? 'f' : 'c';       // as x.mmul(W) in DL4J's layer
        INDArray z = ops().forward(x, params, training, false, order, workspaceMgr, layerId()).z();
        INDArray act = layerConf().getActivationFn().getActivation(z, training);
        if (maskArray != null) {
            if (!maskArray.isColumnVectorOrScalar() || Arrays.equals(maskArray.shape(), act.shape())) {
                act.muli(maskArray.castTo(act.dataType()));                      // per output
            } else {
                act.muliColumnVector(maskArray.castTo(act.dataType()));          // per time step
            }
        }
        return unfold(act, input.size(0), workspaceMgr, ArrayType.ACTIVATIONS);
    }

    @Override
    public Pair<Gradient, INDArray> backpropGradient(INDArray epsilon, LayerWorkspaceMgr workspaceMgr) {
        assertInputSet(true);
        if (input.rank() != 3) {
            throw new UnsupportedOperationException("expected input [minibatch, nIn, T] (rank 3), got shape "
                    + Arrays.toString(input.shape()) + " " + layerId());
        }
        int timeDim = layerConf().getRnnDataFormat() == RNNFormat.NWC ? 1 : 2;
        Preconditions.checkState(labels != null && labels.rank() == 3, "expected labels of rank 3, got %ndShape %s",
                labels, layerId());
        Preconditions.checkState(input.size(timeDim) == labels.size(timeDim), "expected the labels' sequence length "
                + "to equal the input's: input %ndShape, labels %ndShape %s", input, labels, layerId());
        INDArray input3d = input;
        input = fold(input3d, workspaceMgr, ArrayType.BP_WORKING_MEM);
        try {
            LoraOps.Forward f = forward(true, true, workspaceMgr);
            INDArray delta = layerConf().getLossFn().computeGradient(getLabels2d(workspaceMgr,
                    ArrayType.BP_WORKING_MEM), f.z(), layerConf().getActivationFn(), maskArray);
            Pair<Gradient, INDArray> back = ops().backward(f, delta, params, gradientViews, workspaceMgr, layerId());
            INDArray dx = backpropDropOutIfPresent(back.getSecond());
            return new Pair<>(back.getFirst(), unfold(dx, input3d.size(0), workspaceMgr, ArrayType.ACTIVATION_GRAD));
        } finally {
            input = input3d;
        }
    }

    @Override
    public void computeGradientAndScore(LayerWorkspaceMgr workspaceMgr) {
        if (input == null || labels == null) {
            return;
        }
        this.gradient = backpropGradient(null, workspaceMgr).getFirst();
        this.score = computeScore(0.0, true, workspaceMgr);
    }
}
