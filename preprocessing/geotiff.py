"""GeoTIFF in and out for Comephore-format rasters: pixels, GeoKeys -> grid and CRS, and a writer
that produces the same tags and GeoKeys as Meteo-France's hourly files.

The CRS and the transform always come from the file (ModelPixelScale, ModelTiepoint and the
GeoKeyDirectory with its double and ASCII parameters); nothing about the grid is assumed. The
GeoKey semantics follow the GeoTIFF 1.1 specification (OGC 19-008r4): for CT_PolarStereographic
(code 15) the ProjNatOriginLatGeoKey holds the latitude of true scale (EPSG method 9829, variant B)
unless it is +-90, in which case ProjScaleAtNatOriginGeoKey gives the scale (variant A, 9810).
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field

import numpy as np
import tifffile

TAG_PIXEL_SCALE = 33550
TAG_TIEPOINT = 33922
TAG_GEOKEYS = 34735
TAG_GEO_DOUBLES = 34736
TAG_GEO_ASCII = 34737

# GeoKey ids used here (GeoTIFF 1.1, section 7).
GT_MODEL_TYPE = 1024
GT_RASTER_TYPE = 1025
GT_CITATION = 1026
GEOGRAPHIC_TYPE = 2048
GEOG_CITATION = 2049
GEOG_ANGULAR_UNITS = 2054
GEOG_SEMI_MAJOR = 2057
GEOG_INV_FLATTENING = 2059
PROJECTED_CS_TYPE = 3072
PROJECTION = 3074
PROJ_COORD_TRANS = 3075
PROJ_LINEAR_UNITS = 3076
PROJ_NAT_ORIGIN_LONG = 3080
PROJ_NAT_ORIGIN_LAT = 3081
PROJ_FALSE_EASTING = 3082
PROJ_FALSE_NORTHING = 3083
PROJ_SCALE_AT_NAT_ORIGIN = 3092
PROJ_STRAIGHT_VERT_POLE_LONG = 3095

USER_DEFINED = 32767
CT_POLAR_STEREOGRAPHIC = 15
WGS84_GCS = 4326
WGS84_A, WGS84_RF = 6378137.0, 298.257223563
LINEAR_METRE = 9001
RASTER_PIXEL_IS_POINT = 2


class GeoTiffError(ValueError):
    """A GeoTIFF that cannot be read or georeferenced; the message names what is wrong."""


@dataclass(frozen=True)
class Grid:
    """A north-up raster grid: `x0, y0` the outer upper-left corner, `dx > 0`, `dy < 0` per row."""

    width: int
    height: int
    x0: float
    y0: float
    dx: float
    dy: float
    crs_proj4: str = ""
    crs_wkt: str = ""
    geokeys: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def transform(self) -> tuple:
        """GDAL-order affine transform (x0, dx, 0, y0, 0, dy) of the cell corners."""
        return (self.x0, self.dx, 0.0, self.y0, 0.0, self.dy)

    @property
    def x(self) -> np.ndarray:
        """Cell-centre x coordinates."""
        return self.x0 + (np.arange(self.width) + 0.5) * self.dx

    @property
    def y(self) -> np.ndarray:
        """Cell-centre y coordinates (decreasing with row for north-up data)."""
        return self.y0 + (np.arange(self.height) + 0.5) * self.dy

    def describe(self) -> str:
        return (
            f"{self.height} x {self.width} cells of {self.dx:g} x {abs(self.dy):g}, upper-left "
            f"({self.x0:.3f}, {self.y0:.3f}), crs '{self.crs_proj4 or 'unknown'}'"
        )

    def same_as(self, other: "Grid", tol_pixels: float = 1e-3) -> bool:
        """Same shape, CRS and transform (corner and spacing within `tol_pixels` of a cell)."""
        tol = tol_pixels * min(abs(self.dx), abs(self.dy))
        return (
            self.width == other.width
            and self.height == other.height
            and self.crs_proj4 == other.crs_proj4
            and all(abs(a - b) <= tol for a, b in zip(self.transform, other.transform))
        )


def parse_geokeys(tags: dict) -> dict:
    """{key id: value} from the GeoKeyDirectory, resolving double and ASCII parameter references."""
    directory = tags.get(TAG_GEOKEYS)
    if directory is None:
        raise GeoTiffError("no GeoKeyDirectoryTag (34735): not a GeoTIFF, cannot georeference it")
    directory = [int(v) for v in directory]
    doubles = [float(v) for v in tags.get(TAG_GEO_DOUBLES, ())]
    ascii_ = tags.get(TAG_GEO_ASCII, "")
    if isinstance(ascii_, bytes):
        ascii_ = ascii_.decode("ascii", "replace")
    if len(directory) < 4 or len(directory) < 4 + 4 * directory[3]:
        raise GeoTiffError(
            f"GeoKeyDirectoryTag holds {len(directory)} values, too few for its header and "
            f"{directory[3] if len(directory) >= 4 else '?'} keys: the file is damaged"
        )
    n_keys = directory[3]
    keys = {}
    for i in range(n_keys):
        key, location, count, value = directory[4 + 4 * i : 8 + 4 * i]
        if location == 0:
            keys[key] = value
        elif location == TAG_GEO_DOUBLES:
            vals = doubles[value : value + count]
            if count < 1 or len(vals) != count:
                raise GeoTiffError(
                    f"GeoKey {key} refers to doubles {value}..{value + count - 1} of "
                    f"{len(doubles)}: the file is damaged"
                )
            keys[key] = vals[0] if count == 1 else vals
        elif location == TAG_GEO_ASCII:
            keys[key] = ascii_[value : value + count].rstrip("|\x00")
        else:
            raise GeoTiffError(f"GeoKey {key} points to tag {location}, which is not a GeoTIFF parameter tag")
    return keys


def _ellipsoid(keys: dict) -> tuple[str, float, float]:
    a = keys.get(GEOG_SEMI_MAJOR)
    rf = keys.get(GEOG_INV_FLATTENING)
    if a is not None and rf is not None:
        name = "WGS 84" if abs(a - WGS84_A) < 1e-6 and abs(rf - WGS84_RF) < 1e-9 else "user-defined"
        return name, float(a), float(rf)
    if keys.get(GEOGRAPHIC_TYPE) == WGS84_GCS:
        return "WGS 84", WGS84_A, WGS84_RF
    raise GeoTiffError(
        f"GeoKeys give neither an ellipsoid (2057/2059) nor a known geographic CRS "
        f"(2048={keys.get(GEOGRAPHIC_TYPE)}): cannot build the CRS"
    )


def _wkt_number(v: float) -> str:
    return f"{v:.12g}"


def _polar_stereographic(keys: dict) -> tuple[str, str]:
    lat = float(keys.get(PROJ_NAT_ORIGIN_LAT, 90.0))
    lon = float(keys.get(PROJ_STRAIGHT_VERT_POLE_LONG, keys.get(PROJ_NAT_ORIGIN_LONG, 0.0)))
    k = float(keys.get(PROJ_SCALE_AT_NAT_ORIGIN, 1.0))
    fe = float(keys.get(PROJ_FALSE_EASTING, 0.0))
    fn = float(keys.get(PROJ_FALSE_NORTHING, 0.0))
    ell_name, a, rf = _ellipsoid(keys)
    pole = 90.0 if lat > 0 else -90.0
    ellps = "+ellps=WGS84" if ell_name == "WGS 84" else f"+a={a!r} +rf={rf!r}"
    deg = 'ANGLEUNIT["degree",0.0174532925199433]'
    metre = 'LENGTHUNIT["metre",1]'
    if abs(abs(lat) - 90.0) < 1e-12:
        proj4 = f"+proj=stere +lat_0={pole:g} +lon_0={lon:g} +k={k:g} +x_0={fe:g} +y_0={fn:g} {ellps} +units=m +no_defs"
        method = 'METHOD["Polar Stereographic (variant A)",ID["EPSG",9810]]'
        params = (
            f'PARAMETER["Latitude of natural origin",{_wkt_number(pole)},{deg},ID["EPSG",8801]],'
            f'PARAMETER["Longitude of natural origin",{_wkt_number(lon)},{deg},ID["EPSG",8802]],'
            f'PARAMETER["Scale factor at natural origin",{_wkt_number(k)},SCALEUNIT["unity",1],ID["EPSG",8805]],'
        )
    else:
        if abs(k - 1.0) > 1e-12:
            raise GeoTiffError(
                f"polar stereographic with true-scale latitude {lat} and scale {k}: "
                "a scale other than 1 is only defined for a pole origin (variant A)"
            )
        proj4 = f"+proj=stere +lat_0={pole:g} +lat_ts={lat:g} +lon_0={lon:g} +k=1 +x_0={fe:g} +y_0={fn:g} {ellps} +units=m +no_defs"
        method = 'METHOD["Polar Stereographic (variant B)",ID["EPSG",9829]]'
        params = (
            f'PARAMETER["Latitude of standard parallel",{_wkt_number(lat)},{deg},ID["EPSG",8832]],'
            f'PARAMETER["Longitude of origin",{_wkt_number(lon)},{deg},ID["EPSG",8833]],'
        )
    params += (
        f'PARAMETER["False easting",{_wkt_number(fe)},{metre},ID["EPSG",8806]],'
        f'PARAMETER["False northing",{_wkt_number(fn)},{metre},ID["EPSG",8807]]'
    )
    datum = "World Geodetic System 1984" if ell_name == "WGS 84" else f"user-defined ellipsoid a={a} rf={rf}"
    wkt = (
        f'PROJCRS["polar stereographic (from GeoKeys)",BASEGEOGCRS["{ell_name}",DATUM["{datum}",'
        f'ELLIPSOID["{ell_name}",{_wkt_number(a)},{_wkt_number(rf)},{metre}]],PRIMEM["Greenwich",0,{deg}]],'
        f'CONVERSION["polar stereographic",{method},{params}],'
        f'CS[Cartesian,2],AXIS["easting (X)",east,ORDER[1],{metre}],AXIS["northing (Y)",north,ORDER[2],{metre}]]'
    )
    return proj4, wkt


def crs_from_geokeys(keys: dict) -> tuple[str, str]:
    """(proj4, WKT2) from parsed GeoKeys. Supports user-defined polar stereographic (Comephore),
    EPSG-coded projected CRSs (WKT left empty: no projection library is assumed) and geographic
    WGS 84. Anything else raises GeoTiffError naming the unsupported key value."""
    model = keys.get(GT_MODEL_TYPE)
    if model == 2:
        _ellipsoid(keys)
        return (
            "+proj=longlat +datum=WGS84 +no_defs",
            'GEOGCRS["WGS 84",DATUM["World Geodetic System 1984",ELLIPSOID["WGS 84",6378137,298.257223563]],'
            'CS[ellipsoidal,2],AXIS["latitude",north],AXIS["longitude",east],ANGLEUNIT["degree",0.0174532925199433]]',
        )
    if model != 1:
        raise GeoTiffError(f"GTModelTypeGeoKey={model} is not projected (1) or geographic (2)")
    code = keys.get(PROJECTED_CS_TYPE, USER_DEFINED)
    if code != USER_DEFINED:
        return f"EPSG:{code}", ""
    units = keys.get(PROJ_LINEAR_UNITS, LINEAR_METRE)
    if units != LINEAR_METRE:
        raise GeoTiffError(f"ProjLinearUnitsGeoKey={units} is not metres (9001): unsupported")
    transform = keys.get(PROJ_COORD_TRANS)
    if transform == CT_POLAR_STEREOGRAPHIC:
        return _polar_stereographic(keys)
    raise GeoTiffError(
        f"ProjCoordTransGeoKey={transform} is not supported (only polar stereographic, 15, "
        "as used by Comephore); convert the file to netCDF with a crs_wkt attribute instead"
    )


def grid_from_tags(tags: dict, width: int, height: int) -> Grid:
    """Grid (shape, corner, spacing, CRS) from the GeoTIFF tags of one image."""
    scale = tags.get(TAG_PIXEL_SCALE)
    tie = tags.get(TAG_TIEPOINT)
    if scale is None or tie is None:
        raise GeoTiffError("ModelPixelScaleTag (33550) or ModelTiepointTag (33922) missing: no transform")
    if len(tie) != 6:
        raise GeoTiffError(f"ModelTiepointTag holds {len(tie)} values; only one tie point (6 values) is supported")
    dx, dy = float(scale[0]), float(scale[1])
    if dx <= 0 or dy <= 0:
        raise GeoTiffError(f"ModelPixelScale ({dx}, {dy}) must be positive")
    keys = parse_geokeys(tags)
    i, j, _, X, Y, _ = (float(v) for v in tie)
    x0, y0 = X - i * dx, Y + j * dy
    if keys.get(GT_RASTER_TYPE) == RASTER_PIXEL_IS_POINT:
        x0, y0 = x0 - dx / 2, y0 + dy / 2
    proj4, wkt = crs_from_geokeys(keys)
    plain = {int(k): (list(v) if isinstance(v, (list, tuple)) else v) for k, v in keys.items()}
    return Grid(width, height, x0, y0, dx, -dy, proj4, wkt, plain)


def read_geotiff(source) -> tuple[np.ndarray, Grid, dict]:
    """Pixels, grid and a few descriptive tags of a single-band GeoTIFF (path or bytes; from bytes
    the pixels of an uncompressed file are a read-only view of them)."""
    in_memory = isinstance(source, (bytes, bytearray, memoryview))
    # tifffile's objects refer to each other (file <-> pages), so they are freed only by the cyclic
    # garbage collector, which runs rarely once many objects are long-lived: the BytesIO is closed
    # here so that this cycle never keeps the frame's bytes (4.7 MB for Comephore) alive; before,
    # up to tens of frames' bytes waited for a collection and peak memory grew with the period
    stream = io.BytesIO(source) if in_memory else contextlib.nullcontext(source)
    try:
        with stream as fh, tifffile.TiffFile(fh) as tif:
            page = tif.pages[0]
            tags = {tag.code: tag.value for tag in page.tags.values()}
            offsets, counts = page.dataoffsets, page.databytecounts
            if (
                in_memory
                and page.compression == 1
                and page.samplesperpixel == 1
                and len(page.shape) == 2
                and all(o + c == n for o, c, n in zip(offsets, counts, offsets[1:]))
                and offsets[0] + sum(counts) <= len(source)
            ):
                # uncompressed strips stored back to back (Comephore's layout): a view of the bytes
                dtype = page.dtype.newbyteorder(tif.byteorder)
                data = np.frombuffer(
                    source, dtype=dtype, count=page.shape[0] * page.shape[1], offset=offsets[0]
                ).reshape(page.shape)
            else:
                data = page.asarray()
    except GeoTiffError:
        raise
    except Exception as exc:  # tifffile raises many types on damaged files
        raise GeoTiffError(f"unreadable TIFF ({type(exc).__name__}: {exc})") from exc
    if data.ndim != 2:
        raise GeoTiffError(f"expected one band, got an image of shape {data.shape}")
    try:
        grid = grid_from_tags(tags, width=data.shape[1], height=data.shape[0])
    except GeoTiffError:
        raise
    except (ArithmeticError, IndexError, KeyError, TypeError, ValueError) as exc:  # values of damaged tags
        raise GeoTiffError(f"damaged georeferencing tags ({type(exc).__name__}: {exc})") from exc
    info = {"description": tags.get(270, ""), "datetime": tags.get(306, ""), "software": tags.get(305, "")}
    return data, grid, info


@dataclass(frozen=True)
class GeoTags:
    """Raw georeferencing tag contents for the writer: pixel scale, one tie point and GeoKeys
    as (key id, value) with int, float or str values (stored inline, as doubles, as ASCII)."""

    pixel_scale: tuple
    tiepoint: tuple
    keys: tuple

    def extratags(self) -> list:
        directory = [1, 1, 0, len(self.keys)]
        doubles, ascii_ = [], ""
        for key, value in sorted(self.keys):
            if isinstance(value, str):
                text = value + "|"
                directory += [key, TAG_GEO_ASCII, len(text), len(ascii_)]
                ascii_ += text
            elif isinstance(value, float):
                directory += [key, TAG_GEO_DOUBLES, 1, len(doubles)]
                doubles.append(value)
            else:
                directory += [key, 0, 1, int(value)]
        tags = [
            (TAG_PIXEL_SCALE, "d", 3, tuple(self.pixel_scale), True),
            (TAG_TIEPOINT, "d", 6, tuple(self.tiepoint), True),
            (TAG_GEOKEYS, "H", len(directory), tuple(directory), True),
        ]
        if doubles:
            tags.append((TAG_GEO_DOUBLES, "d", len(doubles), tuple(doubles), True))
        if ascii_:
            tags.append((TAG_GEO_ASCII, "s", 0, ascii_, True))
        return tags


def write_geotiff(
    target,
    data: np.ndarray,
    geotags: GeoTags,
    *,
    description: str,
    datetime: str,
    software: str,
    artist: str,
    host: str = "hpcsr",
    rows_per_strip: int = 64,
) -> None:
    """Write a single-band uncompressed GeoTIFF (path or binary stream) with the descriptive tags
    Meteo-France's files carry (tifffile leaves out SampleFormat for unsigned integers, TIFF's default)."""
    extratags = geotags.extratags() + [(315, "s", 0, artist, True), (316, "s", 0, host, True)]
    tifffile.imwrite(
        target,
        data,
        photometric="minisblack",
        rowsperstrip=rows_per_strip,
        description=description,
        datetime=datetime,
        software=software,
        metadata=None,
        extratags=extratags,
    )
