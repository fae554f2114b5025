// buildings_shim.cpp - the thin C++ that GDAL's driver classes force on us: a dataset and a band
// whose IReadBlock computes blocks on demand, and the driver's Identify/Open/CreateCopy hooks.
// All logic is in buildings.c (C); this file only forwards.
#include "buildings.h"
#include "pixelfuncs.h"

#include <gdal_priv.h>

namespace {

class BuildingsDataset final : public GDALDataset {
  public:
    explicit BuildingsDataset(disopt_bld *b) : m_b(b) {
        nRasterXSize = disopt_bld_width(b);
        nRasterYSize = disopt_bld_height(b);
        m_src = GDALDataset::FromHandle(disopt_bld_source(b));
        GDALDataset::SetMetadata(const_cast<char **>(disopt_bld_metadata(b)));
        SetBand(1, new BuildingsBand(this));
    }
    ~BuildingsDataset() override {
        FlushCache(true);
        disopt_bld_close(m_b);
    }
    CPLErr GetGeoTransform(double *gt) override { return m_src->GetGeoTransform(gt); }
    const OGRSpatialReference *GetSpatialRef() const override { return m_src->GetSpatialRef(); }
    int GetGCPCount() override { return m_src->GetGCPCount(); }
    const GDAL_GCP *GetGCPs() override { return m_src->GetGCPs(); }
    const OGRSpatialReference *GetGCPSpatialRef() const override { return m_src->GetGCPSpatialRef(); }

    static int Identify(GDALOpenInfo *oi) {
        return disopt_bld_identify(oi->pszFilename, oi->pabyHeader, oi->nHeaderBytes);
    }
    static GDALDataset *Open(GDALOpenInfo *oi) {
        if (!Identify(oi)) return nullptr;
        if (oi->eAccess == GA_Update) {
            CPLError(CE_Failure, CPLE_NotSupported, "BUILDINGS: datasets are read-only");
            return nullptr;
        }
        disopt_bld *b = disopt_bld_open(oi->pszFilename, oi->papszOpenOptions);
        return b ? new BuildingsDataset(b) : nullptr;
    }
    static GDALDataset *CreateCopy(const char *name, GDALDataset *src, int strict, char **options,
                                   GDALProgressFunc progress, void *arg) {
        return GDALDataset::FromHandle(
            disopt_bld_create_copy(name, GDALDataset::ToHandle(src), strict, options, progress, arg));
    }

  private:
    class BuildingsBand final : public GDALRasterBand {
      public:
        explicit BuildingsBand(BuildingsDataset *ds) {
            poDS = ds;
            nBand = 1;
            eDataType = disopt_bld_data_type(ds->m_b);
            nBlockXSize = nBlockYSize = disopt_bld_block_size(ds->m_b);
            GDALRasterBand::SetDescription(disopt_bld_band_description(ds->m_b));
            if (disopt_bld_is_mask(ds->m_b)) m_ct = GDALColorTable::FromHandle(disopt_bld_color_table());
        }
        ~BuildingsBand() override { delete m_ct; }
        CPLErr IReadBlock(int bx, int by, void *buf) override {
            return disopt_bld_read_block(static_cast<BuildingsDataset *>(poDS)->m_b, bx, by, buf);
        }
        double GetNoDataValue(int *ok) override {
            if (ok) *ok = TRUE;
            return disopt_bld_nodata(static_cast<BuildingsDataset *>(poDS)->m_b);
        }
        GDALColorInterp GetColorInterpretation() override { return m_ct ? GCI_PaletteIndex : GCI_GrayIndex; }
        GDALColorTable *GetColorTable() override { return m_ct; }

      private:
        GDALColorTable *m_ct = nullptr;
    };

    disopt_bld *m_b;
    GDALDataset *m_src;
};

// The creation option list includes GTiff's (the output format), which may register after us:
// it is built on first request, by item (GDALGetDriverCreationOptionList) or as a whole
// (GDALGetMetadata: gdalinfo --format).
class BuildingsDriver final : public GDALDriver {
  public:
    const char *GetMetadataItem(const char *name, const char *domain = "") override {
        if (name && EQUAL(name, GDAL_DMD_CREATIONOPTIONLIST) && (!domain || !*domain)) BuildCreationOptions();
        return GDALDriver::GetMetadataItem(name, domain);
    }
    char **GetMetadata(const char *domain = "") override {
        if (!domain || !*domain) BuildCreationOptions();
        return GDALDriver::GetMetadata(domain);
    }

  private:
    void BuildCreationOptions() {
        if (m_co_done) return;
        m_co_done = true;
        char *co = disopt_bld_creation_option_list();
        SetMetadataItem(GDAL_DMD_CREATIONOPTIONLIST, co);
        CPLFree(co);
    }
    bool m_co_done = false;
};

} // namespace

extern "C" __attribute__((visibility("default"))) void GDALRegister_BUILDINGS(void) {
    if (!GDAL_CHECK_VERSION("BUILDINGS")) return;
    if (GDALGetDriverByName("BUILDINGS") != nullptr) return;
    disopt_register_pixel_functions();
    auto *drv = new BuildingsDriver();
    drv->SetDescription("BUILDINGS");
    drv->SetMetadataItem(GDAL_DCAP_RASTER, "YES");
    drv->SetMetadataItem(GDAL_DMD_LONGNAME, "DisOptNet building footprints from SAR (gdal-disopt)");
    drv->SetMetadataItem(GDAL_DMD_HELPTOPIC, DISOPT_DOC_URL);
    drv->SetMetadataItem(GDAL_DMD_CONNECTION_PREFIX, DISOPT_BLD_PREFIX);
    drv->SetMetadataItem(GDAL_DMD_CREATIONDATATYPES, "Byte Float32");
    drv->SetMetadataItem(GDAL_DCAP_VIRTUALIO, "YES");
    drv->SetMetadataItem(GDAL_DCAP_CREATECOPY, "YES");
    drv->SetMetadataItem(GDAL_DCAP_OPEN, "YES");
    drv->SetMetadataItem(GDAL_DMD_OPENOPTIONLIST, disopt_bld_open_option_list());
    drv->pfnIdentify = BuildingsDataset::Identify;
    drv->pfnOpen = BuildingsDataset::Open;
    drv->pfnCreateCopy = BuildingsDataset::CreateCopy;
    GetGDALDriverManager()->RegisterDriver(drv);
}
